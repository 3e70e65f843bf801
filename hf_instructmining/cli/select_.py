"""`instructmining select`: keep the best rows of a scored dataset (lower `instruct_score` is better)."""

from dataclasses import dataclass, field

from ._io import InputArguments, load_input, make_command_parser, save_output


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
            Keep the k rows with the lowest score.
        fraction (`float`, *optional*):
            Keep this fraction of rows (0 < fraction <= 1), lowest scores first.
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
        given = [name for name in ("top_k", "fraction", "threshold") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"Give exactly one of `--top_k`, `--fraction`, `--threshold` (got {given or 'none'}).")


def make_parser():
    return make_command_parser(
        "select", (InputArguments, SelectArguments), "Keep the best rows of a scored dataset.", EXAMPLES
    )


def select_rows(scored, args: SelectArguments):
    """Apply the one selection that `args` names (shared with `instructmining push`)."""
    from ..selection import select_fraction, select_threshold, select_top_k

    options = {"score_column": args.score_column, "deduplicate": args.dedupe}
    if args.top_k is not None:
        return select_top_k(scored, args.top_k, **options)
    if args.fraction is not None:
        return select_fraction(scored, args.fraction, **options)
    return select_threshold(scored, args.threshold, **options)


def main(inputs: InputArguments, args: SelectArguments) -> dict[str, object]:
    scored = load_input(inputs)
    selected = select_rows(scored, args)
    return {"rows in": len(scored), "rows selected": len(selected), "output": save_output(selected, args.output)}
