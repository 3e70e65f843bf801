"""How many of a dataset's values a rule clipped, per indicator, and which of its terms rank nothing.

A rule reads each row's indicators through [`QualityRule.used_values`], the one place that decides what a value
outside the rule's `domain` counts for. Rows vary far more than the subset means the domain was fitted on, so some
clipping is normal; but an indicator clipped on every row to the same edge adds a constant to every score: it
ranks nothing, whatever its coefficient. These counts make that visible in the `score` summary,
[`~hf_instructmining.scoring.summarize_dataset`] and dataset cards.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import column_names


@dataclass(frozen=True)
class ClipCount:
    """How a rule read one indicator column: the values it clipped, and the range of the values it used.

    Mergeable across shards or groups ([`ClipCount.merge`]).

    Args:
        n (`int`): values counted (NaN values, from invalid rows, are not).
        below (`int`): values below the rule's range that the rule raised.
        above (`int`): values above the rule's range that the rule lowered.
        low (`float`), high (`float`): the smallest and largest value the rule used (NaN when `n` is 0).

    Example:

    ```py
    >>> from hf_instructmining import QualityRule
    >>> from hf_instructmining.rules.clipping import clip_counts
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)})
    >>> count = clip_counts(rule, {"mtld": [70.0, 90.0, 65.0]})["mtld"]
    >>> count.below, count.above, count.ranks_nothing, count.describe()
    (0, 3, True, 'all 3 rows above the range: a constant, it ranks nothing')
    ```
    """

    n: int = 0
    below: int = 0
    above: int = 0
    low: float = math.nan
    high: float = math.nan

    @property
    def clipped(self) -> int:
        """Values the rule changed, on either side."""
        return self.below + self.above

    @property
    def ranks_nothing(self) -> bool:
        """Whether the rule used the same value on every row (of at least two): the term adds a constant."""
        return self.n > 1 and self.low == self.high

    def merge(self, other: "ClipCount") -> "ClipCount":
        """The counts of both sets of rows together."""
        if not other.n or not self.n:
            return self if self.n else other
        low, high = min(self.low, other.low), max(self.high, other.high)
        return ClipCount(self.n + other.n, self.below + other.below, self.above + other.above, low, high)

    def describe(self) -> str:
        """The counts in words, e.g. `"89 of 120 rows (12 below, 77 above the range)"`."""
        if self.clipped == self.n and self.n and (not self.below or not self.above):
            text = f"all {self.n} rows {'below' if self.below else 'above'} the range"
        else:
            text = f"{self.clipped} of {self.n} rows ({self.below} below, {self.above} above the range)"
        return text + (": a constant, it ranks nothing" if self.ranks_nothing else "")

    def to_dict(self) -> dict[str, Any]:
        """`{"n", "below", "above", "ranks_nothing"}`, the form summaries and dataset cards record."""
        return {"n": self.n, "below": self.below, "above": self.above, "ranks_nothing": self.ranks_nothing}


def clip_counts(rule: Any, columns: Any) -> dict[str, ClipCount]:
    """For each indicator the rule reads, how many of these rows' values it clipped (see [`ClipCount`]).

    Args:
        rule ([`QualityRule`]): the rule.
        columns (`Mapping[str, Sequence[float]]`, `pandas.DataFrame` or `datasets.Dataset`): the rows' indicator
            values, as for [`QualityRule.predict`].

    Returns:
        `dict[str, ClipCount]`: one per rule column, in coefficient order; empty when a column is missing.
    """
    if any(c not in column_names(columns) for c in rule.columns):
        return {}
    if hasattr(columns, "select_columns"):  # a Dataset: read only the rule's columns, through Arrow
        table = columns.select_columns(rule.columns).with_format("arrow")[:]
        columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in rule.columns}
    used, below, above = rule.used_values(columns)
    counts = {}
    for column in rule.columns:
        values = used[column][~np.isnan(used[column])]
        low, high = (float(values.min()), float(values.max())) if values.size else (math.nan, math.nan)
        counts[column] = ClipCount(int(values.size), int(below[column].sum()), int(above[column].sum()), low, high)
    return counts


def describe_clipping(counts: dict[str, ClipCount]) -> str | None:
    """A sentence listing the clipped indicators with their counts; `None` when the rule clipped nothing."""
    clipped = [f"`{column}` on {count.describe()}" for column, count in counts.items() if count.clipped]
    return f"Clipped into that range: {'; '.join(clipped)}." if clipped else None
