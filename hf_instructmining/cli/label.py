"""`instructmining label`: finetune on sampled subsets of a scored pool and record each one's eval loss."""

from dataclasses import dataclass, field

from ._io import InputArguments, load_input, make_command_parser
from ._training import FinetuneArguments


EXAMPLES = """\
  # one scored pool, mixtures of its `source` column's groups:
  instructmining label --dataset scored.parquet --source_column source --n_subsets 40 --subset_size 1000 \\
      --model_name_or_path meta-llama/Llama-2-7b-hf --eval_dataset eval.jsonl --store labels.jsonl
  # interrupted? run the same command again: finished subsets are skipped
  instructmining label --config label.yaml"""


@dataclass
class LabelArguments:
    """Which subsets to label and where the labels go.

    Args:
        store (`str`):
            The label store (JSON Lines, append-only); re-running skips the subsets it has finished.
        n_subsets (`int`, *optional*, defaults to `20`):
            How many subsets to sample.
        subset_size (`int`, *optional*, defaults to `1000`):
            Rows per subset.
        source_column (`str`, *optional*):
            Split the pool into named sources by this column and sample random mixtures of them; without it, plain
            random subsets of the pool.
        indicators (`str`, *optional*):
            Comma-separated indicator columns to average per subset; every known indicator column by default.
        subset_seed (`int`, *optional*, defaults to `0`):
            Seed of the subset sampling.
    """

    store: str = field(default=None, metadata={"help": "Label store (JSON Lines); re-running resumes it."})
    n_subsets: int = field(default=20, metadata={"help": "How many subsets to sample."})
    subset_size: int = field(default=1000, metadata={"help": "Rows per subset."})
    source_column: str | None = field(default=None, metadata={"help": "Mix the pool's groups by this column."})
    indicators: str | None = field(default=None, metadata={"help": "Comma-separated indicator columns to average."})
    subset_seed: int = field(default=0, metadata={"help": "Seed of the subset sampling."})

    def __post_init__(self):
        if not self.store:
            raise ValueError("`--store` is required (a .jsonl path for the labels).")


def make_parser():
    return make_command_parser(
        "label",
        (InputArguments, LabelArguments, FinetuneArguments),
        "Finetune on sampled subsets of a scored pool and record each subset's eval loss.",
        EXAMPLES,
    )


def main(inputs: InputArguments, args: LabelArguments, training: FinetuneArguments) -> dict[str, object]:
    from ..labeling import LabelStore, run_labeling, sample_subsets, split_by_column

    pool = load_input(inputs)
    eval_set = load_input(InputArguments(dataset=training.eval_dataset, split=inputs.split))
    sources = split_by_column(pool, args.source_column) if args.source_column else pool
    subsets = sample_subsets(sources, n_subsets=args.n_subsets, subset_size=args.subset_size, seed=args.subset_seed)
    indicators = [c.strip() for c in args.indicators.split(",")] if args.indicators else None
    store = LabelStore(args.store)
    labels = run_labeling(
        subsets, eval_set, training.labeling_config(), store, scored_pool=sources, indicators=indicators
    )
    losses = [record["eval_loss"] for record in labels]
    return {
        "subsets labelled": len(labels),
        "eval loss range": f"{min(losses):.4f} .. {max(losses):.4f}" if losses else "-",
        "store": args.store,
    }
