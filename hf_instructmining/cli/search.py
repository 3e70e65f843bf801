"""`instructmining search`: search how many top-ranked rows to keep, each trial a finetuning run."""

import json
import os
from dataclasses import dataclass, field

from ..labeling.config import LabelingConfig
from ..search import SearchConfig
from ._io import InputArguments, load_input, make_command_parser, require_score_column
from ._training import EvalArguments, training_config


EXAMPLES = """\
  instructmining search --dataset scored.parquet --low 100 --high 10000 --num_samples 12 \\
      --model_name_or_path meta-llama/Llama-2-7b-hf --eval_dataset eval.jsonl --output_dir search/
  # also train on random rows of the same sizes, to see where the rule beats random:
  instructmining search --config search.yaml --random_baseline"""


@dataclass
class SearchArguments:
    """The range, the budget and where the trace goes.

    Args:
        output_dir (`str`):
            Writes `instructmining_search.json` (the trace) and `search_curve.png` here; trials persist in
            `trials.jsonl` there unless `store` is given, so re-running resumes.
        low (`int`, *optional*, defaults to `1`):
            Smallest k.
        high (`int`, *optional*):
            Largest k; every scored row by default.
        num_samples (`int`, *optional*, defaults to `10`):
            Trials in all, counting finished ones.
        time_budget_s (`float`, *optional*):
            Wall-clock budget of this call in seconds.
        store (`str`, *optional*):
            Label store for the trials (shared across searches for warm starts).
        random_baseline (`bool`, *optional*, defaults to `False`):
            Also finetune on k random rows at every size tried.
    """

    output_dir: str = field(default=None, metadata={"help": "Where the trace JSON and the curve PNG go."})
    low: int = field(default=1, metadata={"help": "Smallest k."})
    high: int | None = field(default=None, metadata={"help": "Largest k; every scored row by default."})
    num_samples: int = field(default=10, metadata={"help": "Trials in all, counting finished ones."})
    time_budget_s: float | None = field(default=None, metadata={"help": "Wall-clock budget in seconds."})
    store: str | None = field(default=None, metadata={"help": "Label store for the trials (warm starts)."})
    random_baseline: bool = field(default=False, metadata={"help": "Also train on k random rows at each size."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("`--output_dir` is required.")
        if self.low < 1 or self.num_samples < 1:
            raise ValueError(f"`--low` and `--num_samples` must be at least 1, got {self.low} and {self.num_samples}.")
        if self.high is not None and self.high < self.low:
            raise ValueError(f"`--high` ({self.high}) must be at least `--low` ({self.low}).")


def make_parser():
    return make_command_parser(
        "search",
        (InputArguments, SearchArguments, SearchConfig, EvalArguments, LabelingConfig),
        "Search how many top-ranked rows to keep (the paper's data-size curve): a bracketing search by default, "
        "FLAML's BlendSearch with `--method blendsearch`.",
        EXAMPLES,
        # `--seed` seeds the search; each trial's trainer writes to a temporary folder, not to `--output_dir`.
        renamed={(LabelingConfig, "seed"): "training_seed"},
        hidden={(LabelingConfig, "output_dir")},
    )


def main(
    inputs: InputArguments,
    args: SearchArguments,
    config: SearchConfig,
    evaluation: EvalArguments,
    labeling_config: LabelingConfig,
):
    from ..search import search_subset_size

    labeling_config = training_config(labeling_config)
    scored = load_input(inputs)
    require_score_column(scored, config.score_column, inputs.dataset)
    eval_set = load_input(InputArguments(dataset=evaluation.eval_dataset, split=inputs.split), "--eval_dataset")
    os.makedirs(args.output_dir, exist_ok=True)
    result = search_subset_size(
        scored,
        low=args.low,
        high=args.high,
        num_samples=args.num_samples,
        time_budget_s=args.time_budget_s,
        store=args.store or os.path.join(args.output_dir, "trials.jsonl"),
        random_baseline=args.random_baseline,
        config=config,
        eval_dataset=eval_set,
        labeling_config=labeling_config,
    )
    trace_path = os.path.join(args.output_dir, "instructmining_search.json")
    with open(trace_path, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    return {
        "trials": len(result.trace),
        "best k": result.best_k,
        "best eval loss": f"{result.best_loss:.4f}",
        "trace": trace_path,
        "plot": result.plot(os.path.join(args.output_dir, "search_curve.png")),
    }
