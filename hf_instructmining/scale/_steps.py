"""The steps every scale-out path shares: plan the indicators, embed a batch for KNN, search all embeddings.

The Ray path and the multi-GPU path both run per-row indicators batch by batch, embed KNN texts batch by batch on
the workers, and then run one exact search over every embedding, exactly as `compute_indicators` does in one
process (its `KNNDistance.compute_dataset` = embed every row, then search).
"""

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._plan import is_knn, load_reference, plan_indicators, resolve_rule
from ..formats import extract_pairs
from ..indicators import Indicator
from ..rules import QualityRule


logger = logging.getLogger(__name__)


def plan(
    rule_or_indicators: Any,
    *,
    models: Mapping[str, str] | None,
    device: str | None,
    on_invalid: str,
    format: str | None,
    column_mapping: Mapping[str, str] | None,
    reference: Any,
    stacklevel: int,
) -> tuple[QualityRule | None, list[Indicator], list[Indicator]]:
    """`(rule, per-row indicators, whole-dataset KNN indicators)` for a rule, or a list of names or indicators.

    A list (or tuple) holds indicator columns (`"reward"`, `"knn_6"`) or [`Indicator`] objects; anything else is
    a rule (a [`QualityRule`], a built-in name, a JSON file, a folder or Hub repo). KNN indicators with a fixed
    `reference` set are per-row; without one they need the embed-then-search steps.
    """
    from ..scoring import ScoreConfig

    if isinstance(rule_or_indicators, list | tuple):
        rule = None
        names = [x for x in rule_or_indicators if isinstance(x, str)]
        objects = [x for x in rule_or_indicators if isinstance(x, Indicator)]
        if len(names) + len(objects) != len(rule_or_indicators) or not rule_or_indicators:
            raise TypeError(
                "Pass a rule (a QualityRule, a built-in rule name or a path), or a non-empty list of indicator "
                f"columns and `Indicator` objects; got `{rule_or_indicators!r}`."
            )
    else:
        rule, names, objects = resolve_rule(rule_or_indicators), [], []
    # The rule's indicators after the named ones, as `compute_indicators` plans them.
    specs = {**dict.fromkeys(names, {}), **({c: rule.indicators[c] for c in rule.columns} if rule else {})}
    shared = {"device": device, "on_invalid": on_invalid, "format": format}
    config = ScoreConfig(models=dict(models or {}), column_mapping=dict(column_mapping or {}) or None, **shared)
    planned = plan_indicators(specs, config, fitted=rule, reference=load_reference(reference), stacklevel=stacklevel)
    indicators = [*planned, *objects] if specs else list(objects)
    whole = [i for i in indicators if is_knn(i) and getattr(i, "reference", None) is None]
    return rule, [i for i in indicators if not any(i is w for w in whole)], whole


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
    from ..indicators._knn_search import kth_neighbour_distance
    from ..loading import resolve_device

    device = resolve_device(knn.device)

    values = np.full(len(valid), math.nan)
    if valid.any():
        values[valid] = kth_neighbour_distance(embeddings[valid], None, knn.k, backend=knn.backend, device=device)
    return values
