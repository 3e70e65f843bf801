"""The one scoring path: plan the indicators, compute them, predict the score. Every layout runs these steps.

[`compute_indicators`] (one process), [`InstructScorer`] (a `map` function), `score_on_gpus` (one `map` worker per
GPU) and `score_with_ray` (Ray actors) all plan with [`plan_scoring`], compute per-row indicators with
[`IndicatorMap`], KNN indicators over the whole dataset as embed ([`embed_batch`]) then one exact search
([`search`]), and predict with [`RulePrediction`]; they differ only in where each step runs.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formats import extract_pairs
from ..indicators import Indicator, get_indicator
from ..indicators.base import compute_all
from ..indicators.registry import indicator_family
from ..loading import resolve_device
from ..rules import QualityRule
from . import provenance
from .config import SCORE_COLUMN, ScoreConfig
from .plan import is_knn, load_reference, plan_indicators, resolve_rule


@dataclass
class ScoringPlan:
    """What scoring runs: the rule (when there is one) and its indicators, split by how they are computed.

    Args:
        rule ([`QualityRule`], *optional*): the rule whose prediction is the score column.
        per_row (`list[Indicator]`): indicators computed batch by batch (a KNN indicator with a fixed `reference`
            set is one of them).
        whole (`list[Indicator]`): KNN indicators whose neighbours are the scored rows themselves: every row is
            embedded first, then searched.
        scoring (`dict`, *optional*): the scoring options to record with the score column, for a card's recipe
            (see `provenance.scoring_call`).
    """

    rule: QualityRule | None
    per_row: list[Indicator]
    whole: list[Indicator]
    scoring: dict[str, Any] | None = None

    @property
    def indicators(self) -> list[Indicator]:
        return [*self.per_row, *self.whole]

    def attach_provenance(self, ds):
        """`ds` with each planned column's record of how it was made (see `provenance.py`)."""
        return provenance.attach(ds, self.indicators, self.rule, SCORE_COLUMN, self.scoring)


def plan_scoring(
    indicators: Sequence[str | Indicator],
    rule: QualityRule | str | None,
    config: ScoreConfig,
    *,
    reference: Any = None,
    warn: bool = True,
    require: bool = False,
    stacklevel: int = 2,
) -> ScoringPlan:
    """Plan the named indicators, then the rule's (with the models its coefficients assume).

    Args:
        indicators (`list[str | Indicator]`): indicator columns (`"reward"`, `"knn_6"`), built from `config`, and
            [`Indicator`] objects, used as given.
        rule ([`QualityRule`] or `str`, *optional*): a rule, a built-in rule name, a JSON file, a folder or Hub repo.
        config ([`ScoreConfig`]): the models replacing the rule's, and the options every indicator shares.
        reference (*optional*): the fixed neighbour set of KNN indicators (a `Dataset`, embeddings, or a dataset
            path or Hub id); without one KNN indicators search the scored rows themselves.
        warn (`bool`, *optional*, defaults to `True`): warn when `config.models` replaces a model of the rule.
        require (`bool`, *optional*, defaults to `False`): check now that every model can be loaded.
        stacklevel (`int`, *optional*, defaults to `2`): of the replaced-model warning, counted from the caller.
    """
    names = [x for x in indicators if isinstance(x, str)]
    objects = [x for x in indicators if isinstance(x, Indicator)]
    if len(names) + len(objects) != len(indicators):
        raise TypeError(f"Indicators are given as columns or `Indicator` objects, got `{list(indicators)!r}`.")
    rule = None if rule is None else resolve_rule(rule)
    specs: dict[str, dict[str, Any]] = dict.fromkeys(names, {})
    if rule is not None:
        specs.update({c: rule.indicators[c] for c in rule.columns})
    planned = (
        plan_indicators(
            specs,
            config,
            fitted=rule if warn else None,
            reference=load_reference(reference),
            stacklevel=stacklevel + 1,
            require=require,
        )
        if specs
        else []
    )
    every = [*planned, *objects]
    whole = [i for i in every if is_knn(i) and getattr(i, "reference", None) is None]
    shared = {"on_invalid": config.on_invalid, "format": config.format, "column_mapping": config.column_mapping}
    extra = [*names, *(c for x in objects for c in x.columns)]
    scoring = provenance.scoring_call(extra, config.models, shared, reference)
    return ScoringPlan(rule, [i for i in every if not any(i is w for w in whole)], whole, scoring)


def split_target(target: Any) -> tuple[list[str | Indicator], QualityRule | None]:
    """`(indicators, rule)` from what the scale-out entry points take: a rule (a [`QualityRule`], a built-in name,
    a JSON file, a folder or Hub repo), or a non-empty list of indicator columns and [`Indicator`] objects."""
    if not isinstance(target, list | tuple):
        return [], resolve_rule(target)
    if not target or not all(isinstance(x, str | Indicator) for x in target):
        raise TypeError(
            "Pass a rule (a QualityRule, a built-in rule name or a path), or a non-empty list of indicator "
            f"columns and `Indicator` objects; got `{target!r}`."
        )
    return list(target), None


def rows_needed(indicators: Sequence[str | Indicator], rule: QualityRule | None) -> tuple[str | None, int]:
    """The fewest rows that define every indicator of `indicators` and `rule`, and the column that needs them.

    A KNN indicator that searches the scored rows themselves needs more than `k` rows (a row is not its own
    neighbour), and one given a `reference` set needs `k` rows there; every other indicator is defined on one row.
    Callers check this before planning, which prepares the models: the same failure came after minutes of model
    work otherwise.

    Returns:
        `tuple[str | None, int]`: the column (`None` when any row will do) and the number of rows.

    Example:

    ```py
    >>> from hf_instructmining.scoring.steps import rows_needed
    >>> rows_needed(["mtld", "knn_6"], None)
    ('knn_6', 7)
    ```
    """
    names = [x for x in indicators if isinstance(x, str)]
    specs = {**dict.fromkeys(names, {}), **({c: rule.indicators[c] for c in rule.columns} if rule else {})}
    needs = [
        (get_indicator(column, **spec).k + 1, column)
        for column, spec in specs.items()
        if indicator_family(column) == "knn"
    ]
    # `Indicator` objects are used as given: a KNN object with its own reference set needs no rows of the dataset.
    needs += [
        (x.k + 1, x.columns[0])
        for x in indicators
        if isinstance(x, Indicator) and indicator_family(x.columns[0]) == "knn" and x.reference is None
    ]
    rows, column = max(needs, default=(1, None))
    return column, rows


class IndicatorMap:
    """Several indicators as one batched `map` function, with dataset row indices in error messages (`offset`: the
    dataset row of the mapped rows' first, when they are a slice of it)."""

    def __init__(self, indicators: list[Indicator], offset: int = 0):
        self.indicators = indicators
        self.offset = offset

    def __call__(self, batch: Mapping[str, Any], indices: list[int], rank: int | None = None) -> dict[str, Any]:
        indices = [self.offset + i for i in indices] if self.offset else indices
        return compute_all(self.indicators, batch, indices=indices, rank=rank)


class RulePrediction:
    """The rule's prediction from the indicator columns already in the batch (NaN rows stay NaN)."""

    def __init__(self, rule: QualityRule):
        self.rule = rule

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[float]]:
        return {SCORE_COLUMN: self.rule.predict(batch, allow_nan=True).tolist()}


def embed_batch(knn, batch: Mapping[str, Any], indices: Sequence[int], rank: int | None = None):
    """The embeddings `(n, d)` of a batch's rows (zeros on invalid rows) and their validity mask `(n,)`."""
    pairs = extract_pairs(
        batch, format=knn.format, column_mapping=knn.column_mapping, on_invalid=knn.on_invalid, indices=indices
    )
    valid = np.asarray(pairs.valid, dtype=bool)
    model, _, _ = knn.load(rank)
    embeddings = np.zeros((len(valid), model.config.hidden_size), dtype=np.float32)
    if valid.any():
        embeddings[valid] = knn.embed(pairs if valid.all() else pairs.select_valid(), rank)
    return embeddings, valid


def search(knn, embeddings: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each valid row's distance to its k-th nearest other valid row (NaN on invalid rows), as in one process.

    Runs on the indicator's device: a GPU when this process sees one and the indicator names none.
    """
    values = np.full(len(valid), math.nan)
    if valid.any():
        values[valid] = knn.kth_distances(embeddings[valid], device=resolve_device(knn.device))
    return values
