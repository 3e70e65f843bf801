"""Each subset's indicator statistics (n/mean/std/min/max), looked up in the scored pool by `row_index`."""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..indicators.registry import indicator_columns
from .subsets import ROW_INDEX_COLUMN, SOURCE_COLUMN, Subset


logger = logging.getLogger(__name__)


def resolve_indicators(
    indicators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None, scored_pool, subsets: list[Subset]
) -> dict[str, dict]:
    """Column -> indicator options; by default every known indicator column of the pool (or of the subsets)."""
    if isinstance(indicators, Mapping):
        return {str(c): dict(o or {}) for c, o in indicators.items()}
    if indicators is not None:
        if isinstance(indicators, str):
            indicators = [indicators]
        return {str(c): {} for c in indicators}
    if isinstance(scored_pool, Mapping):
        columns = [c for ds in scored_pool.values() for c in ds.column_names]
    elif scored_pool is not None:
        columns = scored_pool.column_names
    else:
        columns = subsets[0].dataset.column_names
    found = indicator_columns(dict.fromkeys(columns))
    if not found:
        logger.warning("No indicator columns found; labels will carry eval losses only (score the pool first).")
    return {c: {} for c in found}


def indicator_stats(subset: Subset, scored_pool, columns: list[str]) -> dict[str, dict]:
    """Mergeable statistics of each indicator over the subset's rows: n (finite values), mean, std, min, max."""
    if not columns:
        return {}
    values = _values(subset, scored_pool, columns)
    stats = {}
    for column, column_values in values.items():
        array = np.asarray(column_values, dtype=float)
        finite = array[np.isfinite(array)]
        if finite.size < array.size:
            logger.warning(
                "Subset %s: %d of %d `%s` values are NaN and left out of its mean.",
                subset.subset_id,
                array.size - finite.size,
                array.size,
                column,
            )
        if finite.size == 0:
            raise ValueError(f"Subset `{subset.subset_id}` has no finite `{column}` value to average.")
        stats[column] = {
            "n": int(finite.size),
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "max": float(finite.max()),
        }
    return stats


def _values(subset: Subset, scored_pool, columns: list[str]) -> dict[str, list]:
    rows = subset.dataset
    if scored_pool is None:
        missing = [c for c in columns if c not in rows.column_names]
        if missing:
            raise ValueError(
                f"Subset `{subset.subset_id}` has no column(s) {missing} (columns: {rows.column_names}); pass "
                "`scored_pool=` (the scored sources the subsets were drawn from) or score the sources first."
            )
        return {c: rows[c] for c in columns}
    if ROW_INDEX_COLUMN not in rows.column_names:
        raise ValueError(
            f"Subset `{subset.subset_id}` has no `{ROW_INDEX_COLUMN}` column to find its rows in `scored_pool`; "
            "draw subsets with `sample_subsets`, or add the column (the row's position in the pool)."
        )
    pools = scored_pool if isinstance(scored_pool, Mapping) else None
    values: dict[str, list] = {c: [] for c in columns}
    if pools is None:
        groups = {None: rows[ROW_INDEX_COLUMN]}
    else:
        sources = rows[SOURCE_COLUMN] if SOURCE_COLUMN in rows.column_names else [None] * len(rows)
        groups: dict[Any, list[int]] = {}
        for source, index in zip(sources, rows[ROW_INDEX_COLUMN], strict=True):
            groups.setdefault(source, []).append(index)
    for source, index in groups.items():
        pool = scored_pool if pools is None else pools.get(source)
        if pool is None:
            raise ValueError(f"`scored_pool` has no source `{source}`; it has {sorted(pools)}.")
        missing = [c for c in columns if c not in pool.column_names]
        if missing:
            raise ValueError(f"`scored_pool` has no column(s) {missing}; its columns are {pool.column_names}.")
        selected = pool.select(index)
        for c in columns:
            values[c].extend(selected[c])
    return values
