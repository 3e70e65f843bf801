"""Sample the training subsets whose finetuned eval losses label a quality rule (paper Section 3.2).

The paper finetunes a base model on 129 random mixtures of four instruction datasets and regresses the log eval
loss on each mixture's mean indicator values. `sample_subsets` draws such mixtures: each subset takes a mixing
ratio from a symmetric Dirichlet distribution over the named sources (`concentration=1` is uniform over all
ratios), turns it into row counts that add up to `subset_size`, and draws that many rows from each source
without replacement. Given a single dataset instead, it draws plain random subsets of that pool.

Data users score often holds one answer per instruction, while mixtures of models answering the same
instructions repeat instructions within a subset. `one_per="instruction"` draws subsets of the first shape: at
most one row per instruction, the mixing ratio deciding which source answers.

Subset `i` depends only on `(seed, i)`, so asking for more subsets later keeps the first ones, and its id holds
a hash of its rows, so two different samplings can share a `LabelStore` without mixing up their labels.
"""

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats import extract_pairs


logger = logging.getLogger(__name__)

SOURCE_COLUMN = "source"
ROW_INDEX_COLUMN = "row_index"


@dataclass
class Subset:
    """One sampled training subset.

    Args:
        subset_id (`str`): `"<index>-<hash of its rows>"`, stable for the same seed and sources.
        dataset (`datasets.Dataset`): its rows, with a `source` column (the source's name) and a `row_index`
            column (the row's position in that source; these replace any columns of the same names).
        composition (`dict[str, int]`): rows taken from each source.
        ratios (`dict[str, float]`): the sampled mixing ratio of each source.
        seed (`int`): the seed it was drawn with.
    """

    subset_id: str
    dataset: Any
    composition: dict[str, int]
    ratios: dict[str, float]
    seed: int
    indices: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return sum(self.composition.values())

    def describe(self) -> dict[str, Any]:
        """The JSON-safe description recorded in a `LabelStore`."""
        return {"subset_id": self.subset_id, "composition": self.composition, "ratios": self.ratios, "seed": self.seed}


def split_by_column(dataset, column: str) -> dict[str, Any]:
    """Split one dataset into named sources by the values of `column`, for [`sample_subsets`] to mix.

    Args:
        dataset (`datasets.Dataset`): the pool, e.g. several datasets concatenated with a column naming each.
        column (`str`): the column whose values name the sources.

    Returns:
        `dict[str, datasets.Dataset]`: value (as a string) -> that value's rows, in their original order, sorted by
        name.

    Raises:
        `ValueError`: when `dataset` has no such column.

    Example:

    ```py
    >>> import datasets
    >>> from hf_instructmining.labeling.subsets import split_by_column
    >>> pool = datasets.Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["x", "y", "z"],
    ...                                    "origin": ["dolly", "alpaca", "dolly"]})
    >>> {name: len(rows) for name, rows in split_by_column(pool, "origin").items()}
    {'alpaca': 1, 'dolly': 2}
    ```
    """
    if column not in dataset.column_names:
        raise ValueError(f"No column `{column}` to split sources by; the columns are {dataset.column_names}.")
    # One pass over the column, then one `select` per source (a `filter` per source would scan every row each time).
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(dataset[column]):
        groups.setdefault(str(value), []).append(i)
    return {name: dataset.select(groups[name]) for name in sorted(groups)}


def sample_subsets(
    sources,
    n_subsets: int,
    subset_size: int,
    seed: int = 0,
    *,
    concentration: float = 1.0,
    one_per: str | None = None,
) -> list[Subset]:
    """Draw `n_subsets` random training subsets of `subset_size` rows each.

    Args:
        sources (`dict[str, datasets.Dataset]` or `datasets.Dataset`): named source datasets to mix, or one pool
            to draw plain random subsets from (its name is then `"pool"`).
        n_subsets (`int`): how many subsets.
        subset_size (`int`): rows per subset.
        seed (`int`, *optional*, defaults to `0`): subset `i` is drawn from `numpy.random.default_rng([seed, i])`.
        concentration (`float`, *optional*, defaults to `1.0`): the Dirichlet concentration of the mixing ratios;
            `1` is uniform over all ratios, larger values give more even mixtures, smaller ones purer subsets.
        one_per (`str`, *optional*): a column, e.g. `"instruction"`: each subset holds at most one row per value of
            it, as data with one answer per instruction does. Sources are filled in order of their ratio; the rows a
            source cannot give without repeating a value come from the next ones.

    Returns:
        `list[Subset]`: each with its id, rows, composition and ratios.

    Raises:
        `ValueError`: too few rows (or, with `one_per`, too few distinct values) in the sources, non-positive
            sizes, or sources with different layouts that cannot be read as instruction pairs.

    Example:

    ```py
    >>> import datasets
    >>> from hf_instructmining import sample_subsets
    >>> a = datasets.Dataset.from_dict({"instruction": ["a"] * 10, "output": ["x"] * 10})
    >>> b = datasets.Dataset.from_dict({"instruction": ["b"] * 10, "output": ["y"] * 10})
    >>> subsets = sample_subsets({"a": a, "b": b}, n_subsets=3, subset_size=8, seed=0)
    >>> [len(s) for s in subsets], sum(subsets[0].composition.values())
    ([8, 8, 8], 8)
    >>> subsets[0].dataset.column_names
    ['instruction', 'output', 'source', 'row_index']
    >>> same = datasets.Dataset.from_dict({"instruction": [str(i) for i in range(10)], "output": ["z"] * 10})
    >>> once = sample_subsets({"a": same, "b": same}, n_subsets=1, subset_size=8, one_per="instruction")[0]
    >>> len(set(once.dataset["instruction"]))
    8
    ```
    """
    import datasets

    if isinstance(sources, datasets.Dataset):
        sources, mixing = {"pool": sources}, False
    elif isinstance(sources, Mapping) and sources:
        sources, mixing = dict(sources), True
    else:
        raise TypeError("`sources` must be a `datasets.Dataset` or a non-empty dict of name -> `datasets.Dataset`.")
    if n_subsets < 1 or subset_size < 1:
        raise ValueError(f"`n_subsets` and `subset_size` must be positive, got {n_subsets} and {subset_size}.")
    if concentration <= 0:
        raise ValueError(f"`concentration` must be positive, got {concentration}.")
    sizes = {name: len(ds) for name, ds in sources.items()}
    if sum(sizes.values()) < subset_size:
        raise ValueError(f"`subset_size={subset_size}` is more than the {sum(sizes.values())} rows in {sizes}.")
    sources = _common_layout(sources)
    values = None
    if one_per is not None:
        missing = [n for n, ds in sources.items() if one_per not in ds.column_names]
        if missing:
            raise ValueError(f"`one_per={one_per!r}` names no column of the sources {missing}.")
        # Plain lists, read once: the draw below looks values up row by row, and a `Column` reads Arrow per lookup.
        values = {n: list(ds[one_per]) for n, ds in sources.items()}
        distinct = len(set().union(*map(set, values.values())))
        if distinct < subset_size:
            raise ValueError(
                f"`subset_size={subset_size}` is more than the {distinct} distinct values of `{one_per}` in the "
                "sources: lower it, or drop `one_per`."
            )

    subsets = []
    for i in range(n_subsets):
        rng = np.random.default_rng([seed, i])
        names = list(sources)
        ratios = rng.dirichlet([concentration] * len(names)) if mixing else np.ones(1)
        counts = _counts(ratios, subset_size, [sizes[n] for n in names])
        if values is None:
            indices = {
                n: sorted(rng.choice(sizes[n], size=c, replace=False).tolist())
                for n, c in zip(names, counts, strict=True)
            }
        else:
            indices = _one_per_value(rng, names, counts, ratios, values)
        parts = [
            sources[n]
            .select(idx)
            .remove_columns([c for c in (SOURCE_COLUMN, ROW_INDEX_COLUMN) if c in sources[n].column_names])
            .add_column(SOURCE_COLUMN, [n] * len(idx))
            .add_column(ROW_INDEX_COLUMN, idx)
            for n, idx in indices.items()
            if idx
        ]
        digest = hashlib.sha1(json.dumps(indices, sort_keys=True).encode()).hexdigest()[:8]
        subsets.append(
            Subset(
                subset_id=f"{i:04d}-{digest}",
                dataset=datasets.concatenate_datasets(parts),
                composition={n: len(idx) for n, idx in indices.items()},
                ratios={n: round(float(r), 6) for n, r in zip(names, ratios, strict=True)},
                seed=seed,
                indices=indices,
            )
        )
    return subsets


def _counts(ratios: np.ndarray, total: int, capacity: list[int]) -> list[int]:
    """Largest-remainder rounding of `ratios * total`, moving rows a small source lacks to the others."""
    exact = ratios * total
    counts = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[j] += 1
    counts = np.minimum(counts, capacity)
    # Hand the rows a full source could not give to the sources with the most room left, in ratio order.
    for j in np.argsort(-ratios, kind="stable"):
        take = min(capacity[j] - counts[j], total - counts.sum())
        counts[j] += take
    return counts.tolist()


def _one_per_value(rng, names: list[str], counts: list[int], ratios, values: dict[str, list]) -> dict[str, list[int]]:
    """Row indices per source, `counts` of them, no two rows sharing a value; the sources in order of their ratio,
    each handing the rows it cannot give (every free value taken) to the next, then a last pass filling any gap."""
    taken: set = set()
    chosen: dict[str, list[int]] = {n: [] for n in names}
    order = [names[j] for j in np.argsort(-np.asarray(ratios), kind="stable")]
    wanted = dict(zip(names, counts, strict=True))
    shuffled = {n: rng.permutation(len(values[n])).tolist() for n in order}
    short = 0
    for final_pass in (False, True):
        for n in order:
            want = len(chosen[n]) + short if final_pass else wanted[n] + short
            for row in shuffled[n]:
                if len(chosen[n]) >= want:
                    break
                if values[n][row] not in taken:
                    taken.add(values[n][row])
                    chosen[n].append(row)
            short = want - len(chosen[n])
    return {n: sorted(rows) for n, rows in chosen.items()}


def _common_layout(sources: dict) -> dict:
    """Sources with different columns are read as instruction pairs and rewritten in the Alpaca layout."""
    features = {name: ds.features for name, ds in sources.items()}
    if len({repr(f) for f in features.values()}) == 1:
        return sources
    shared = set.intersection(*(set(f) for f in features.values()))
    keep = [
        c
        for c in shared
        if len({repr(f[c]) for f in features.values()}) == 1 and c not in ("instruction", "input", "output")
    ]
    logger.info("Sources have different columns; rewriting them as `instruction`/`output` (keeping %s).", keep)

    def to_alpaca(batch):
        pairs = extract_pairs(batch)
        return {"instruction": pairs.instructions, "output": pairs.responses, **{c: batch[c] for c in keep}}

    return {
        name: ds.map(to_alpaca, batched=True, remove_columns=ds.column_names, desc=f"Reading {name} as pairs")
        for name, ds in sources.items()
    }
