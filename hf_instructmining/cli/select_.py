"""`instructmining select`: keep the best rows of a scored dataset (lower `instruct_score` is better)."""

import math
from dataclasses import dataclass, field

from ._io import InputArguments, check_output, load_input, make_command_parser, require_score_column, save_output


EXAMPLES = """\
  instructmining select --dataset scored.parquet --top_k 1000 --output selected.parquet
  instructmining select --dataset scored.parquet --fraction 0.1 --dedupe --output selected.jsonl
  instructmining select --dataset scored.parquet --threshold 0.45 --output selected/"""


@dataclass
class SelectArguments:
    """How many rows to keep. Give exactly one of `top_k`, `fraction` or `threshold`.

    Args:
        output (`str`):
            Where to write the selected rows (`.parquet`, `.jsonl`, `.json`, `.csv`, or a folder).
        top_k (`int`, *optional*):
            Keep the k rows with the lowest score (k >= 1).
        fraction (`float`, *optional*):
            Keep this fraction of rows (0 < fraction <= 1), lowest scores first.

    A selection that keeps no row is an error: nothing empty is written or published.
        threshold (`float`, *optional*):
            Keep rows whose score is at most this value.
        score_column (`str`, *optional*, defaults to `"instruct_score"`):
            The column to rank by.
        dedupe (`bool`, *optional*, defaults to `False`):
            Drop exact duplicate (instruction, response) pairs before selecting, keeping the best-scored copy.
    """

    output: str = field(metadata={"help": "Output file (.parquet, .jsonl, .json, .csv) or folder."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the k rows with the lowest score."})
    fraction: float | None = field(default=None, metadata={"help": "Keep this fraction of rows, lowest first."})
    threshold: float | None = field(default=None, metadata={"help": "Keep rows whose score is at most this."})
    score_column: str = field(default="instruct_score", metadata={"help": "Column to rank by (lower is better)."})
    dedupe: bool = field(default=False, metadata={"help": "Drop exact duplicate (instruction, response) pairs."})

    def __post_init__(self):
        check_output(self.output)
        given = [name for name in ("top_k", "fraction", "threshold") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"Give exactly one of `--top_k`, `--fraction`, `--threshold` (got {given or 'none'}).")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"`--top_k` must be at least 1, got {self.top_k}.")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"`--fraction` must be in (0, 1], got {self.fraction}: e.g. 0.1 keeps the best 10%.")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"`--threshold` must be a finite score, got {self.threshold}.")


def make_parser():
    return make_command_parser(
        "select", (InputArguments, SelectArguments), "Keep the best rows of a scored dataset.", EXAMPLES
    )


def select_rows(scored, args: SelectArguments):
    """Apply the one selection that `args` names (shared with `instructmining push`); an empty one is an error."""
    import numpy as np

    from ..selection import select_fraction, select_threshold, select_top_k

    # Through Arrow: the numpy format converts row by row.
    table = scored.select_columns([args.score_column]).with_format("arrow")[:]
    scores = table.column(args.score_column).to_numpy(zero_copy_only=False).astype(float)
    ranked = scores[~np.isnan(scores)]
    if not ranked.size:
        raise ValueError(f"No row has a `{args.score_column}` (every score is NaN): there is nothing to select.")
    options = {"score_column": args.score_column, "deduplicate": args.dedupe}
    if args.top_k is not None:
        selected = select_top_k(scored, args.top_k, **options)
    elif args.fraction is not None:
        selected = select_fraction(scored, args.fraction, **options)
    else:
        selected = select_threshold(scored, args.threshold, **options)
    if len(selected):
        return selected
    if args.threshold is not None:
        raise ValueError(
            f"No row scores at most `--threshold {args.threshold}`: the best (lowest) score is {ranked.min():.6g}; "
            "raise `--threshold`, or use `--top_k` or `--fraction`."
        )
    # Deduplication shrinks the rows the fraction is of: only without it is 1/n the least fraction that keeps a row.
    least = "a larger one" if args.dedupe else f"at least {1 / ranked.size:.3g}"
    raise ValueError(
        f"`--fraction {args.fraction}` of the {ranked.size} rows with a score keeps no row; give {least}, or use "
        "`--top_k`."
    )


def main(inputs: InputArguments, args: SelectArguments) -> dict[str, object]:
    scored = load_input(inputs)
    require_score_column(scored, args.score_column, inputs.dataset)
    selected = select_rows(scored, args)
    return {"rows in": len(scored), "rows selected": len(selected), "output": save_output(selected, args.output)}
