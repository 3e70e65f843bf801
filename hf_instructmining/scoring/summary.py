"""Dataset-level statistics of indicator columns, and the rule's estimate of a whole dataset's quality.

InstructMining fits its rule on the *mean* indicator values of whole datasets (paper, Section 3.2), so the rule
applied to a dataset's means predicts the log eval loss of a model finetuned on that dataset: the paper's
dataset-quality estimate. Statistics are kept as n/mean/std/min/max that merge exactly across shards
(Chan et al.'s parallel variance), so a dataset scored in pieces summarises the same as in one go.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..indicators.registry import is_indicator_column
from ..rules import QualityRule
from ..rules.clipping import ClipCount, clip_counts
from ..rules.scales import transform
from .config import SCORE_COLUMN


# Rows summarised at a time: the statistics merge across chunks, so memory stays flat at any size.
_CHUNK = 65536


@dataclass
class IndicatorStats:
    """Mergeable statistics of one column over its non-NaN values.

    Args:
        n (`int`): how many values were counted (NaN values are not).
        mean (`float`): their mean (NaN when `n` is 0).
        m2 (`float`): the sum of squared deviations from the mean (what makes `std` mergeable).
        min (`float`), max (`float`): the extremes (NaN when `n` is 0).

    Example:

    ```py
    >>> from hf_instructmining.scoring import IndicatorStats
    >>> a, b = IndicatorStats.from_values([1.0, 2.0]), IndicatorStats.from_values([3.0, float("nan")])
    >>> a.merge(b).to_dict()
    {'n': 3, 'mean': 2.0, 'std': 0.816496580927726, 'min': 1.0, 'max': 3.0}
    ```
    """

    n: int = 0
    mean: float = math.nan
    m2: float = 0.0
    min: float = math.nan
    max: float = math.nan

    @classmethod
    def from_values(cls, values: Sequence[float]) -> "IndicatorStats":
        array = np.asarray(values, dtype=float)
        array = array[~np.isnan(array)]
        if array.size == 0:
            return cls()
        mean = float(array.mean())
        return cls(int(array.size), mean, float(((array - mean) ** 2).sum()), float(array.min()), float(array.max()))

    @property
    def std(self) -> float:
        """Population standard deviation (NaN when `n` is 0)."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    def merge(self, other: "IndicatorStats") -> "IndicatorStats":
        """The statistics of both sets of values together."""
        if not other.n:
            return IndicatorStats(self.n, self.mean, self.m2, self.min, self.max)
        if not self.n:
            return IndicatorStats(other.n, other.mean, other.m2, other.min, other.max)
        n = self.n + other.n
        delta = other.mean - self.mean
        return IndicatorStats(
            n,
            self.mean + delta * other.n / n,
            self.m2 + other.m2 + delta**2 * self.n * other.n / n,
            min(self.min, other.min),
            max(self.max, other.max),
        )

    def to_dict(self) -> dict[str, Any]:
        """`{"n", "mean", "std", "min", "max"}`, the form dataset cards and label records use."""
        return {"n": self.n, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max}


@dataclass
class DatasetSummary:
    """What a scored dataset looks like as a whole, and what the rule predicts for it.

    Args:
        num_rows (`int`): rows in the dataset.
        num_invalid (`int`): rows with a NaN in any summarised indicator column (rows that `on_invalid="nan"` let
            through); they count in no mean.
        stats (`dict[str, IndicatorStats]`): per indicator column (and `instruct_score` when present).
        rule ([`QualityRule`], *optional*): the rule whose estimate is reported.
        clipped (`dict[str, ClipCount]`): per column the rule reads, how many values it clipped into the range it
            was fitted on, below and above, and whether the term ranks nothing (the same value on every row); see
            [`~hf_instructmining.rules.clipping.clip_counts`]. Empty without a rule.
        groups (`dict[str, DatasetSummary]`): with `group_by`, the summary of each group's rows, by the group's
            value (as text).
        scaled (`dict[str, IndicatorStats]`): per column the rule reads on another scale (its `transforms`), the
            statistics of the transformed values: the rule was fitted on their means, e.g. the mean of
            `log(perplexity)`, which is not the log of the mean.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import QualityRule
    >>> from hf_instructmining.scoring import summarize_dataset
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}})
    >>> summary = summarize_dataset(Dataset.from_dict({"mtld": [10.0, 30.0, float("nan")]}), rule=rule)
    >>> summary.num_rows, summary.num_invalid, summary.means, round(summary.predicted_log_eval_loss, 6)
    (3, 1, {'mtld': 20.0}, 0.8)
    ```
    """

    num_rows: int
    num_invalid: int
    stats: dict[str, IndicatorStats] = field(default_factory=dict)
    rule: QualityRule | None = None
    clipped: dict[str, ClipCount] = field(default_factory=dict)
    groups: dict[str, "DatasetSummary"] = field(default_factory=dict)
    scaled: dict[str, IndicatorStats] = field(default_factory=dict)

    @property
    def means(self) -> dict[str, float]:
        """The mean of each indicator column (`instruct_score` left out)."""
        return {c: s.mean for c, s in self.stats.items() if c != SCORE_COLUMN}

    @property
    def predicted_log_eval_loss(self) -> float | None:
        """The rule applied to the dataset's mean indicators: the paper's dataset-quality estimate (lower is better).

        `None` without a rule; NaN when a column the rule needs has no valid value.
        """
        if self.rule is None:
            return None
        means = {**self.means, **{c: s.mean for c, s in self.scaled.items()}}
        if any(c not in means for c in self.rule.columns) or any(c not in self.scaled for c in self.rule.transforms):
            return None
        on_scale = {c: [means[c]] for c in self.rule.columns}
        return float(self.rule.predict(on_scale, allow_nan=True, on_rule_scale=True)[0])

    @property
    def predicted_eval_loss(self) -> float | None:
        """`exp` of [`predicted_log_eval_loss`]."""
        log_loss = self.predicted_log_eval_loss
        return None if log_loss is None else math.exp(log_loss)

    def merge(self, other: "DatasetSummary") -> "DatasetSummary":
        """The summary of both datasets together (same rule and columns expected)."""
        if self.rule != other.rule:
            raise ValueError("Cannot merge summaries made with different rules.")
        columns = list(dict.fromkeys([*self.stats, *other.stats]))
        empty = IndicatorStats()
        clipped = list(dict.fromkeys([*self.clipped, *other.clipped]))
        groups = {g: self.groups[g].merge(other.groups[g]) for g in self.groups if g in other.groups}
        scaled = list(dict.fromkeys([*self.scaled, *other.scaled]))
        return DatasetSummary(
            self.num_rows + other.num_rows,
            self.num_invalid + other.num_invalid,
            {c: self.stats.get(c, empty).merge(other.stats.get(c, empty)) for c in columns},
            self.rule,
            {c: self.clipped.get(c, ClipCount()).merge(other.clipped.get(c, ClipCount())) for c in clipped},
            {**self.groups, **other.groups, **groups},
            {c: self.scaled.get(c, empty).merge(other.scaled.get(c, empty)) for c in scaled},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows, invalid rows, the rule's name and estimate, each column's statistics, the rule's clip
        counts (`clipped`, with a rule) and each group's summary (`groups`, with `group_by`)."""
        data = {
            "num_rows": self.num_rows,
            "num_invalid": self.num_invalid,
            "rule": None if self.rule is None else self.rule.name,
            "predicted_log_eval_loss": self.predicted_log_eval_loss,
            "predicted_eval_loss": self.predicted_eval_loss,
            "indicators": {c: s.to_dict() for c, s in self.stats.items()},
        }
        if self.clipped:
            data["clipped"] = {c: count.to_dict() for c, count in self.clipped.items()}
        if self.groups:
            data["groups"] = {g: summary.to_dict() for g, summary in self.groups.items()}
        return data


def summarize_dataset(
    ds: Any,
    rule: QualityRule | str | None = None,
    columns: Sequence[str] | None = None,
    *,
    group_by: str | None = None,
) -> DatasetSummary:
    """Summarise the indicator columns of a scored dataset, with the rule's predicted log eval loss for it, how many
    values the rule clipped into the range it was fitted on, and, with `group_by`, the same for each group of rows.

    Args:
        ds (`datasets.Dataset` or `Mapping[str, Sequence[float]]`): scored rows.
        rule ([`QualityRule`] or `str`, *optional*): a rule, or a built-in rule name; its columns are summarised
            and its estimate and clip counts reported.
        columns (`Sequence[str]`, *optional*): the columns to summarise; by default the rule's columns, else every
            known indicator column of `ds`, plus `instruct_score` when present.
        group_by (`str`, *optional*): a column of `ds` (e.g. the model that wrote each answer); each of its values
            gets its own summary in `groups` (row count, means, mean score, clip counts).

    Returns:
        [`DatasetSummary`]

    Raises:
        `ValueError`: a column is missing, or `group_by` holds values that are not text or numbers.

    Example:

    ```py
    >>> from hf_instructmining import QualityRule
    >>> from hf_instructmining.scoring import summarize_dataset
    >>> summarize_dataset({"mtld": [1.0, 3.0], "instruct_score": [0.5, 0.7]}).to_dict()["indicators"]["mtld"]
    {'n': 2, 'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0}
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)})
    >>> rows = {"mtld": [10.0, 30.0, 70.0, 90.0], "generator": ["a", "a", "b", "b"]}
    >>> summary = summarize_dataset(rows, rule, group_by="generator")
    >>> summary.clipped["mtld"].describe(), summary.groups["b"].clipped["mtld"].describe()
    ('3 of 4 rows (1 below, 2 above the range)', 'all 2 rows above the range: a constant, it ranks nothing')
    ```
    """
    if isinstance(rule, str):
        rule = QualityRule.from_builtin(rule)
    present = list(ds.column_names) if hasattr(ds, "column_names") else list(ds)
    if columns is None:
        columns = rule.columns if rule is not None else [c for c in present if is_indicator_column(c)]
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"The dataset has no column(s) {missing}; its columns are {present}.")
    columns = list(columns)
    if not columns:
        raise ValueError(f"No indicator columns to summarise; the dataset's columns are {present}.")
    if group_by is not None and group_by not in present:
        raise ValueError(
            f"The dataset has no column `{group_by}` to group by (`group_by=`); its columns are {present}."
        )
    summarised = [c for c in [*columns, SCORE_COLUMN] if c in present]
    # The rule's columns are read too, for its clip counts, when `columns` leaves some out.
    scored = rule is not None and all(c in present for c in rule.columns)
    read = list(dict.fromkeys([*summarised, *(rule.columns if scored else [])]))
    summary = DatasetSummary(0, 0, {c: IndicatorStats() for c in summarised}, rule)
    keys = _group_chunks(ds, group_by) if group_by is not None else None
    for values in _chunks(ds, read):
        summary = summary.merge(_summarize(values, columns, summarised, rule))
        if keys is None:
            continue
        chunk = np.asarray(next(keys), dtype=object)  # the same rows as `values`: both read `_CHUNK` at a time
        for key in dict.fromkeys(chunk):
            part = _summarize({c: v[chunk == key] for c, v in values.items()}, columns, summarised, rule)
            summary.groups[key] = summary.groups[key].merge(part) if key in summary.groups else part
    summary.groups = dict(sorted(summary.groups.items()))
    return summary


def _summarize(
    values: dict[str, np.ndarray], columns: list[str], summarised: list[str], rule: QualityRule | None
) -> DatasetSummary:
    """The summary of one chunk (or group) of rows."""
    invalid = np.zeros(len(values[summarised[0]]), dtype=bool)
    for column in columns:
        invalid |= np.isnan(values[column])
    stats = {c: IndicatorStats.from_values(values[c]) for c in summarised}
    clipped = clip_counts(rule, values) if rule is not None else {}
    scaled = {
        c: IndicatorStats.from_values(transform(values[c], name, c))
        for c, name in (rule.transforms if rule is not None else {}).items()
        if c in values
    }
    return DatasetSummary(len(invalid), int(invalid.sum()), stats, rule, clipped, scaled=scaled)


def _group_chunks(ds: Any, column: str) -> Iterator[list[str]]:
    """Each row's group as text (`None` as `"None"`), in the chunks of [`_chunks`]."""
    if not hasattr(ds, "iter"):
        batches: Any = [{column: list(ds[column])}]
    else:
        batches = ds.select_columns([column]).iter(batch_size=_CHUNK)
    for batch in batches:
        wrong = next((v for v in batch[column] if v is not None and not isinstance(v, str | int | float | bool)), None)
        if wrong is not None:
            raise ValueError(
                f"`group_by` column `{column}` holds {type(wrong).__name__} values; group by a column of text or "
                "numbers."
            )
        yield [str(v) for v in batch[column]]


def _chunks(ds: Any, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The columns as float arrays, `_CHUNK` rows at a time from a `Dataset` (whose columns may not fit in memory as
    Python lists: a million rows' column is tens of MB), at once from a mapping of sequences."""
    if not hasattr(ds, "iter"):
        yield {c: np.asarray(ds[c], dtype=float) for c in columns}
        return
    for batch in ds.select_columns(columns).with_format("numpy").iter(batch_size=_CHUNK):
        yield {c: np.asarray(batch[c], dtype=float) for c in columns}
