"""`instructmining label`: finetune on sampled subsets of a scored pool and record each one's eval loss."""

from dataclasses import dataclass, field

from ..labeling.claims import DEFAULT_LEASE_S
from ..labeling.config import LabelingConfig
from ._io import InputArguments, load_input, make_command_parser
from ._training import EvalArguments, training_config


EXAMPLES = """\
  # one scored pool, mixtures of its `source` column's groups:
  instructmining label --dataset scored.parquet --source_column source --n_subsets 40 --subset_size 1000 \\
      --model_name_or_path meta-llama/Llama-2-7b-hf --eval_dataset eval.jsonl --store labels.jsonl
  # subsets of the shape most data has, one answer per instruction, from a pool of several models' answers:
  instructmining label --config label.yaml --one_per instruction
  # interrupted? run the same command again: finished subsets are skipped; the same command run at once in
  # several shells, or on machines sharing the store's file system, shares the subsets between them
  instructmining label --config label.yaml
  # also label with ROUGE-L of greedy answers to 32 eval prompts (a local copy of evaluate's rouge module):
  instructmining label --config label.yaml --metrics ./metrics/rouge --generation_num_samples 32"""


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
        one_per (`str`, *optional*):
            At most one row per value of this column in each subset, e.g. `instruction`: subsets shaped like data
            with one answer per instruction, when the pool holds several answers to each.
        indicators (`str`, *optional*):
            Comma-separated indicator columns to average per subset; every known indicator column by default.
        subset_seed (`int`, *optional*, defaults to `0`):
            Seed of the subset sampling.
        metrics (`str`, *optional*):
            Comma-separated `evaluate` metric modules (local folders `<name>/<name>.py`, or Hub names when online)
            that also score greedy answers to a sample of eval prompts, e.g. `./metrics/rouge` (how many prompts
            and tokens: `LabelingConfig`'s `--generation_*` flags).
        claim_lease_s (`float`, *optional*, defaults to `300.0`):
            Seconds a worker's claim on a subset lasts without renewal: a subset whose worker was on a machine that
            is gone goes to another worker after this long (a worker that died on this machine is seen at once).
    """

    store: str = field(default=None, metadata={"help": "Label store (JSON Lines); re-running resumes it."})
    n_subsets: int = field(default=20, metadata={"help": "How many subsets to sample."})
    subset_size: int = field(default=1000, metadata={"help": "Rows per subset."})
    source_column: str | None = field(default=None, metadata={"help": "Mix the pool's groups by this column."})
    one_per: str | None = field(
        default=None, metadata={"help": "At most one row per value of this column in a subset (e.g. instruction)."}
    )
    indicators: str | None = field(default=None, metadata={"help": "Comma-separated indicator columns to average."})
    subset_seed: int = field(default=0, metadata={"help": "Seed of the subset sampling."})
    metrics: str | None = field(
        default=None, metadata={"help": "Comma-separated evaluate metric modules scoring generated answers."}
    )
    claim_lease_s: float = field(
        default=DEFAULT_LEASE_S, metadata={"help": "Seconds a claim on a subset lasts without renewal."}
    )

    def __post_init__(self):
        if not self.store:
            raise ValueError("`--store` is required (a .jsonl path for the labels).")
        for name in ("n_subsets", "subset_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name}` must be at least 1, got {getattr(self, name)}.")


def make_parser():
    return make_command_parser(
        "label",
        (InputArguments, LabelArguments, EvalArguments, LabelingConfig),
        "Finetune on sampled subsets of a scored pool and record each subset's eval loss.",
        EXAMPLES,
        renamed={(LabelingConfig, "seed"): "training_seed"},  # `--subset_seed` seeds the sampling
    )


def main(
    inputs: InputArguments, args: LabelArguments, evaluation: EvalArguments, config: LabelingConfig
) -> dict[str, object]:
    from ..labeling import LabelStore, run_labeling, sample_subsets, split_by_column

    config = training_config(config)
    pool = load_input(inputs)
    eval_set = load_input(InputArguments(dataset=evaluation.eval_dataset, split=inputs.split), "--eval_dataset")
    sources = split_by_column(pool, args.source_column) if args.source_column else pool
    subsets = sample_subsets(
        sources, n_subsets=args.n_subsets, subset_size=args.subset_size, seed=args.subset_seed, one_per=args.one_per
    )
    indicators = [c.strip() for c in args.indicators.split(",")] if args.indicators else None
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    store = LabelStore(args.store)
    labels = run_labeling(
        subsets,
        eval_set,
        config,
        store,
        scored_pool=sources,
        indicators=indicators,
        metrics=metrics,
        claim_lease_s=args.claim_lease_s,
    )
    summary = {"subsets labelled": len(labels), "eval loss range": _range([r["eval_loss"] for r in labels])}
    for key in dict.fromkeys(k for r in labels for k in r.get("eval_scores") or {}):
        summary[f"{key} range"] = _range(
            [r["eval_scores"][key] for r in labels if key in (r.get("eval_scores") or {})]
        )
    summary["store"] = args.store
    return summary


def _range(values: list[float]) -> str:
    return f"{min(values):.4f} .. {max(values):.4f}" if values else "-"
