"""Select the best-scored rows of a scored dataset: top-k, top fraction, or a score threshold.

Lower `instruct_score` is better: it is the predicted log eval loss (paper, Section 3). Every selection

- orders rows best first and breaks ties by `row_index`, so the same input always gives the same rows;
- never selects a row whose score is NaN (rows scored with `on_invalid="nan"`): they have no score to rank by;
- can drop exact duplicate (instruction, response) pairs first, keeping the best-scored copy;
- returns a `Dataset` with every column of the input, scores included, plus `row_index`: the row's position in
  the scored dataset (added when absent, kept when present, e.g. when selecting from a selection).
"""

import logging
import math

import numpy as np
from datasets import Dataset

from .formats import extract_pairs


logger = logging.getLogger(__name__)

SCORE_COLUMN = "instruct_score"
ROW_INDEX_COLUMN = "row_index"
_ARGUMENT = {"select_top_k": "k", "select_fraction": "fraction", "select_threshold": "threshold"}


def select_top_k(
    ds: Dataset,
    k: int,
    *,
    score_column: str = SCORE_COLUMN,
    deduplicate: bool = False,
    format: str | None = None,
    column_mapping: dict[str, str] | None = None,
) -> Dataset:
    """The `k` rows with the lowest scores, best first.

    Args:
        ds (`Dataset`): a scored dataset (e.g. `ds.map(instruct_score)`).
        k (`int`): how many rows to keep, at least 1; more than the scored rows gives all of them (with a warning).
        score_column (`str`, *optional*, defaults to `"instruct_score"`): the column to rank by, lower is better.
        deduplicate (`bool`, *optional*, defaults to `False`): drop exact duplicate (instruction, response) pairs
            first, keeping the copy with the best score (then the lowest `row_index`).
        format (`str`, *optional*): the input layout, for `deduplicate` (detected from the columns by default).
        column_mapping (`dict[str, str]`, *optional*): role -> column, for `deduplicate`.

    Returns:
        `Dataset`: the selected rows with all their columns and `row_index`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import select_top_k
    >>> ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["x", "y", "z"], "instruct_score": [0.3, 0.1, 0.2]})
    >>> select_top_k(ds, 2)["row_index"][:]
    [1, 2]
    ```
    """
    # An empty selection is never what was meant (the command line refuses `--top_k 0` alike).
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer (the number of rows to keep), got `{k!r}`.")
    ds, order = _ranked(
        ds, score_column=score_column, deduplicate=deduplicate, format=format, column_mapping=column_mapping
    )
    if k > len(order):
        # With deduplication, duplicates are not counted: "have a score" would be untrue of them.
        ranked = (
            "distinct rows with a score remain after dropping exact duplicates" if deduplicate else "rows have a score"
        )
        logger.warning("Asked for the top %d rows but only %d %s: selecting all of them.", k, len(order), ranked)
    options = {"score_column": score_column, "deduplicate": deduplicate, "format": format}
    return _recorded(ds, ds.select(order[:k]), "select_top_k", k, column_mapping=column_mapping, **options)


def select_fraction(ds: Dataset, fraction: float, **options) -> Dataset:
    """The best `fraction` of the scored rows (rounded down), best first.

    The fraction is of the rows that can be ranked: rows with a NaN score, and duplicates when `deduplicate=True`,
    are not counted.

    Args:
        ds (`Dataset`): a scored dataset.
        fraction (`float`): in (0, 1].
        **options: `score_column`, `deduplicate`, `format`, `column_mapping`, as in [`select_top_k`].

    Returns:
        `Dataset`: the selected rows with all their columns and `row_index`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import select_fraction
    >>> ds = Dataset.from_dict({"instruction": list("abcd"), "output": list("wxyz"), "instruct_score": [0.4, 0.1, 0.3, 0.2]})
    >>> select_fraction(ds, 0.5)["row_index"][:]
    [1, 3]
    ```
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be a number in (0, 1], got `{fraction!r}`: e.g. 0.1 keeps the best 10%.")
    ds, order = _ranked(ds, **options)
    # The epsilon keeps 0.29 * 100 (= 28.999999999999996 in floating point) at 29 rows.
    k = math.floor(fraction * len(order) + 1e-9)
    return _recorded(ds, ds.select(order[:k]), "select_fraction", fraction, **options)


def select_threshold(ds: Dataset, threshold: float, **options) -> Dataset:
    """Every row whose score is at most `threshold`, best first.

    Args:
        ds (`Dataset`): a scored dataset.
        threshold (`float`): the highest score kept (inclusive); lower scores are better.
        **options: `score_column`, `deduplicate`, `format`, `column_mapping`, as in [`select_top_k`].

    Returns:
        `Dataset`: the selected rows with all their columns and `row_index`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import select_threshold
    >>> ds = Dataset.from_dict({"instruction": list("abc"), "output": list("xyz"), "instruct_score": [0.3, 0.1, 0.2]})
    >>> select_threshold(ds, 0.2)["instruct_score"][:]
    [0.1, 0.2]
    ```
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"`threshold` must be a number, got `{threshold!r}`.")
    ds, order = _ranked(ds, **options)
    score_column = options.get("score_column", SCORE_COLUMN)
    scores = np.asarray(ds.select_columns([score_column]).with_format("numpy")[score_column], dtype=float)
    return _recorded(
        ds, ds.select([i for i in order if scores[i] <= threshold]), "select_threshold", threshold, **options
    )


def _recorded(ds: Dataset, selected: Dataset, function: str, value, **options) -> Dataset:
    """`selected` with this call recorded on its `row_index` (options left at their defaults are left out), so that
    a dataset card's recipe repeats it (see `scoring.provenance.attach_selection`)."""
    from .scoring.provenance import attach_selection

    defaults = {"score_column": SCORE_COLUMN, "deduplicate": False, "format": None, "column_mapping": None}
    call = {"function": function, _ARGUMENT[function]: value}
    call.update({k: v for k, v in options.items() if v != defaults[k]})
    return attach_selection(selected, ds, call)


def _ranked(
    ds: Dataset,
    *,
    score_column: str = SCORE_COLUMN,
    deduplicate: bool = False,
    format: str | None = None,
    column_mapping: dict[str, str] | None = None,
) -> tuple[Dataset, list[int]]:
    """Add `row_index` when absent; return the dataset and its rankable row positions, best first."""
    if not isinstance(ds, Dataset):
        raise TypeError(f"Selection works on a `datasets.Dataset`, got {type(ds).__name__}.")
    if len(ds) == 0:  # checked first: scoring an empty dataset adds no columns, and "score it first" misleads
        raise ValueError(
            f"The dataset is empty (0 rows; columns: {ds.column_names}): there is nothing to select. Check the "
            "input file, split or filter that produced it."
        )
    if score_column not in ds.column_names:
        raise ValueError(
            f"The dataset has no `{score_column}` column (columns: {ds.column_names}). Score it first, e.g. "
            "`ds.map(instruct_score)`, or pass `score_column=`."
        )
    if ROW_INDEX_COLUMN not in ds.column_names:
        ds = ds.add_column(ROW_INDEX_COLUMN, list(range(len(ds))))
    # Read the two columns as Arrow arrays: the numpy format converts row by row (about a minute per 100k rows).
    table = ds.select_columns([score_column, ROW_INDEX_COLUMN]).with_format("arrow")[:]
    scores = table.column(score_column).to_numpy(zero_copy_only=False).astype(float)
    row_index = table.column(ROW_INDEX_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = ~np.isnan(scores)
    if not keep.all():
        logger.info("%d row(s) have a NaN `%s` and are never selected.", int((~keep).sum()), score_column)
    # lexsort sorts by its last key first: score, then row_index for ties.
    order = [int(i) for i in np.lexsort((row_index, scores)) if keep[i]]
    if deduplicate:
        order = _first_of_each_pair(ds, order, format, column_mapping)
    return ds, order


def _first_of_each_pair(
    ds: Dataset, order: list[int], format: str | None, column_mapping: dict[str, str] | None
) -> list[int]:
    """Keep the first (best) row of each exact (instruction, response) pair, in `order`."""
    keys: list[tuple[str, str] | None] = []
    for batch in ds.iter(batch_size=1000):
        pairs = extract_pairs(batch, format=format, column_mapping=column_mapping, on_invalid="nan")
        keys.extend(
            (instruction, response) if ok else None
            for instruction, response, ok in zip(pairs.instructions, pairs.responses, pairs.valid, strict=True)
        )
    seen: set[tuple[str, str]] = set()
    kept = []
    for i in order:
        key = keys[i]
        if key is None or key not in seen:
            kept.append(i)
            if key is not None:
                seen.add(key)
    if len(kept) < len(order):
        logger.info("Dropped %d exact duplicate (instruction, response) pair(s).", len(order) - len(kept))
    return kept
