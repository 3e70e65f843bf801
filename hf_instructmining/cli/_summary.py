"""How `score` and `explain` show a scored dataset: means, the rule's estimate, clip counts, and one line per group."""

import math

from ..scoring.config import SCORE_COLUMN


def summary_rows(summary) -> dict[str, str]:
    """The summary table's rows: each column's mean, the rule's estimate, and how many rows the rule clipped per
    indicator (with `ranks nothing` for a term the clipping made constant)."""
    rows: dict[str, str] = {}
    for column, mean in summary.means.items():
        rows[f"mean {column}"] = f"{mean:.4g}"
    if summary.predicted_log_eval_loss is not None:
        rows["predicted log eval loss"] = f"{summary.predicted_log_eval_loss:.4f}"
    for column, count in _clipped(summary).items():
        rows[f"clipped {column}"] = count.describe()
    return rows


def check_group_by(ds, column: str | None) -> None:
    """Fail before any work when `--group_by` names a column the data lacks."""
    if column is not None and column not in ds.column_names:
        raise ValueError(
            f"`--group_by {column}` names no column of the data; its columns are {ds.column_names}. Name a column "
            "that says which group each row belongs to (e.g. the model that wrote the answer)."
        )


def print_groups(summary, column: str) -> None:
    """One line per group: rows, mean score, and the rows the rule clipped per indicator (below/above its range)."""
    clipped = list(_clipped(summary))
    header = [column, "rows", f"mean {SCORE_COLUMN}", *(f"{c} clipped" for c in clipped)]
    lines = []
    for name, group in sorted(summary.groups.items(), key=lambda item: _order(_mean_score(item[1]))):
        mean = _mean_score(group)
        counts = [_count(group.clipped[c]) for c in clipped]
        lines.append([name, str(group.num_rows), "–" if math.isnan(mean) else f"{mean:.4f}", *counts])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    print(
        f"\nBy `{column}`, best mean score first (lower is better). Clipped: rows below / above the rule's range; "
        "constant: the same value on every row of the group, so it ranks nothing there."
    )
    for row in [header, *lines]:
        print(
            "  "
            + "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _clipped(summary) -> dict:
    """The clip counts of the columns the rule has a range for (others are never clipped)."""
    domain = summary.rule.domain if summary.rule is not None else None
    return {c: count for c, count in summary.clipped.items() if domain and c in domain}


def _count(count) -> str:
    return f"{count.below} / {count.above}" + (" constant" if count.ranks_nothing else "")


def _order(mean: float) -> tuple[bool, float]:
    return (math.isnan(mean), 0.0 if math.isnan(mean) else mean)  # groups without a score last


def _mean_score(summary) -> float:
    stats = summary.stats.get(SCORE_COLUMN)
    return stats.mean if stats is not None and stats.n else math.nan
