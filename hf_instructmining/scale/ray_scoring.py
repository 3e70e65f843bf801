"""Score a dataset on a Ray cluster: Ray Data `map_batches` over an actor pool, KNN as embed then one search.

Every row gets a `row_id` (its position in the input) before anything runs, so the result comes back in input
order however Ray schedules blocks, and a block that Ray retries after a worker died replaces its lost output
instead of adding rows. Each actor loads its models once, in its constructor; Ray restarts a dead actor and
resubmits its unfinished blocks (`max_restarts` and `max_task_retries`, unlimited by default in Ray Data).

KNN indicators need every row: the actors embed each block, the embeddings are materialised in the object store,
and one task (on a GPU when the actors use GPUs) runs the same exact search as the single-process path.
"""

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..import_utils import require
from ..indicators import Indicator
from ..rules import QualityRule
from ..scoring import ScoreConfig
from ..scoring.steps import IndicatorMap, RulePrediction, embed_batch, plan_scoring, search, split_target


logger = logging.getLogger(__name__)

_EMBEDDING = "__instructmining_embedding_{}"
_VALID = "__instructmining_valid_{}"


def score_with_ray(
    dataset: Any,
    rule_or_indicators: QualityRule | str | Sequence[str | Indicator],
    *,
    models: Mapping[str, str] | None = None,
    on_invalid: str = "raise",
    format: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    reference: Any = None,
    output_path: str | os.PathLike | None = None,
    num_workers: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    batch_size: int = 256,
    row_id_column: str = "row_id",
    keep_row_id: bool = False,
) -> Any:
    """Compute a rule's indicators and `instruct_score` (or any indicators) with Ray Data, on a cluster or locally.

    The result equals `compute_indicators(ds, rule=...)` row for row: the same indicators, the same whole-dataset
    KNN (each row's k-th nearest other row), in input order. Ray must be initialised (`ray.init(address=...)` for
    a cluster); when it is not, a local instance is started with `ray.init()`.

    Args:
        dataset (`datasets.Dataset`, `str` or `list[str]`): the rows, or parquet file(s) or folder(s) of them
            (read by row group on the workers, so paths must be visible from every node).
        rule_or_indicators ([`QualityRule`], `str` or `list`): a rule (or built-in rule name, JSON file, folder or
            Hub repo), or a list of indicator columns (`["reward", "knn_6"]`) and [`Indicator`] objects.
        models (`dict[str, str]`, *optional*): indicator column or family -> model id or path (see
            [`ScoreConfig`]).
        on_invalid (`str`, *optional*, defaults to `"raise"`): `"raise"` on an unreadable row, or `"nan"`.
        format (`str`, *optional*): force the input layout.
        column_mapping (`dict[str, str]`, *optional*): role -> column.
        reference (`datasets.Dataset`, *optional*): a fixed neighbour set for KNN instead of the dataset itself.
        output_path (`str`, *optional*): write parquet files here (with `row_id_column`, to sort by) instead of
            returning a `Dataset`.
        num_workers (`int`, *optional*): actors in the pool; by default one per `num_gpus` GPUs of the cluster,
            or one per `num_cpus` CPUs without GPUs.
        num_gpus (`float`, *optional*): GPUs per actor; 1 when the cluster has GPUs, else 0 (CPU).
        num_cpus (`float`, *optional*, defaults to `1`): CPUs per actor (its torch threads).
        batch_size (`int`, *optional*, defaults to `256`): rows per block and per model call batch.
        row_id_column (`str`, *optional*, defaults to `"row_id"`): the row position column added to the input.
        keep_row_id (`bool`, *optional*, defaults to `False`): keep that column in the returned `Dataset`.

    Returns:
        `datasets.Dataset` in input order with the indicator columns (and `instruct_score`), or `output_path`.

    Example:

    ```py
    >>> import ray
    >>> from datasets import Dataset
    >>> from hf_instructmining import score_with_ray
    >>> _ = ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # doctest: +SKIP
    >>> ds = Dataset.from_dict({"instruction": ["Say hi", "Count"], "output": ["Hello there", "one two three"]})
    >>> score_with_ray(ds, ["output_length", "mtld"], num_workers=1)["output_length"]  # doctest: +SKIP
    [2.0, 3.0]
    ```
    """
    for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer, got `{value!r}`.")
    require("ray", "score_with_ray")
    import pyarrow as pa
    import ray
    import ray.data

    if not ray.is_initialized():
        logger.info("Ray is not initialised: starting a local instance with `ray.init()`.")
        ray.init()
    _quiet_progress_bars_like_datasets()
    resources = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1 if resources.get("GPU", 0) > 0 else 0
    if num_workers is None:
        per_worker = (resources.get("GPU", 0) / num_gpus) if num_gpus else (resources.get("CPU", 1) / num_cpus)
        num_workers = max(1, int(per_worker))
    config = ScoreConfig(
        models=dict(models or {}),
        device=None if num_gpus else "cpu",  # an actor sees only the GPUs Ray gave it
        on_invalid=on_invalid,
        format=format,
        column_mapping=dict(column_mapping) if column_mapping else None,
    )
    plan = plan_scoring(*split_target(rule_or_indicators), config, reference=reference, stacklevel=3)
    rule, per_row, whole = plan.rule, plan.per_row, plan.whole
    source, num_rows = _read(dataset, row_id_column, batch_size)
    logger.info(
        "Scoring %d rows with %d Ray actor(s), %s GPU(s) each: %s",
        num_rows,
        num_workers,
        num_gpus,
        [c for i in [*per_row, *whole] for c in i.columns],
    )
    scored = source.map_batches(
        _ScoreWorker,
        fn_constructor_kwargs={
            "per_row": per_row,
            "whole": whole,
            "rule": None if whole else rule,
            "row_id_column": row_id_column,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
    )
    if whole:
        # The actor pass is expensive: keep its output so the search and the final pass do not recompute it.
        scored = scored.materialize()
        search_task = ray.remote(_search_all).options(num_gpus=1 if num_gpus else 0, num_cpus=num_cpus)
        distances = {}
        for knn in whole:
            column = knn.columns[0]
            blocks = scored.select_columns([row_id_column, _EMBEDDING.format(column), _VALID.format(column)])
            distances[column] = search_task.remote(knn, num_rows, row_id_column, *blocks.to_arrow_refs())
        distances = ray.put({column: ray.get(ref) for column, ref in distances.items()})
        scored = scored.map_batches(
            _add_distances, fn_args=[distances, rule, row_id_column], batch_format="pyarrow", batch_size=None
        )
    if output_path is not None:
        scored.write_parquet(os.fspath(output_path))
        return os.fspath(output_path)
    table = pa.concat_tables(ray.get(scored.to_arrow_refs()))
    table = table.take(np.argsort(table[row_id_column].to_numpy(), kind="stable"))
    if not keep_row_id:
        table = table.drop_columns([row_id_column])
    # Each column records how it was made, as from `compute_indicators` (parquet written by Ray does not).
    return plan.attach_provenance(_to_dataset(table, getattr(dataset, "features", None)))


class _ScoreWorker:
    """One Ray actor: loads its indicators' models once, then scores (and embeds, for KNN) block after block."""

    def __init__(self, per_row: list[Indicator], whole: list[Indicator], rule: QualityRule | None, row_id_column):
        from ..indicators import ModelIndicator

        self.per_row = IndicatorMap(per_row) if per_row else None
        self.whole, self.rule, self.row_id_column = whole, rule, row_id_column
        for indicator in [*per_row, *whole]:
            if isinstance(indicator, ModelIndicator):
                indicator.load()

    def __call__(self, table):
        import pyarrow as pa

        batch = table.to_pydict()
        ids = batch[self.row_id_column]
        values = self.per_row(batch, ids) if self.per_row else {}
        for column, column_values in values.items():
            table = _put(table, column, pa.array(column_values, pa.float64()))
        for knn in self.whole:
            embeddings, valid = embed_batch(knn, batch, ids)
            flat = pa.array(embeddings.reshape(-1), pa.float32())
            table = _put(
                table, _EMBEDDING.format(knn.columns[0]), pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1])
            )
            table = _put(table, _VALID.format(knn.columns[0]), pa.array(valid))
        if self.rule is not None:
            scores = RulePrediction(self.rule)({**batch, **values})
            table = _put(table, *next(iter(scores.items())))
        return table


def _search_all(knn, num_rows: int, row_id_column: str, *blocks) -> np.ndarray:
    """The search step: gather every block's embeddings by row id, then one exact k-NN search over all rows."""
    column = knn.columns[0]
    width = blocks[0].schema.field(_EMBEDDING.format(column)).type.list_size
    embeddings = np.zeros((num_rows, width), dtype=np.float32)
    valid = np.zeros(num_rows, dtype=bool)
    for block in blocks:
        ids = block[row_id_column].to_numpy()
        vectors = block[_EMBEDDING.format(column)].combine_chunks().flatten().to_numpy()
        embeddings[ids] = vectors.reshape(len(ids), width)
        valid[ids] = block[_VALID.format(column)].to_numpy(zero_copy_only=False)
    return search(knn, embeddings, valid)


def _add_distances(table, distances, rule: QualityRule | None, row_id_column: str):
    import pyarrow as pa
    import ray

    # One shared object (the distances of every row), read zero-copy from the object store by each task.
    distances = ray.get(distances) if isinstance(distances, ray.ObjectRef) else distances
    ids = table[row_id_column].to_numpy()
    for column, values in distances.items():
        table = table.drop_columns([_EMBEDDING.format(column), _VALID.format(column)])
        table = _put(table, column, pa.array(values[ids], pa.float64()))
    if rule is not None:
        scores = RulePrediction(rule)(table.select(rule.columns).to_pydict())
        table = _put(table, *next(iter(scores.items())))
    return table


def _put(table, column: str, values):
    """Add a column, or overwrite it in place when the input already has it (as `Dataset.map` does)."""
    import pyarrow as pa

    values = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, pa.float64())
    if column in table.column_names:
        return table.set_column(table.column_names.index(column), column, values)
    return table.append_column(column, values)


def _read(dataset: Any, row_id_column: str, batch_size: int):
    """A Ray dataset of the input rows with a `row_id_column` holding each row's position; and the row count."""
    import pyarrow as pa
    import ray.data

    if isinstance(dataset, str | os.PathLike) or (
        isinstance(dataset, list | tuple) and all(isinstance(p, str | os.PathLike) for p in dataset)
    ):
        pieces, columns = _parquet_pieces([dataset] if isinstance(dataset, str | os.PathLike) else dataset)
        _check_row_id_column(columns, row_id_column)
        source = ray.data.from_items(pieces).map_batches(
            _read_row_groups, fn_args=[row_id_column], batch_size=1, batch_format="pyarrow"
        )
        return source, sum(piece["num_rows"] for piece in pieces)
    if not (hasattr(dataset, "with_format") and hasattr(dataset, "column_names")):
        raise TypeError(f"`dataset` must be a `datasets.Dataset` or parquet path(s), got {type(dataset).__name__}.")
    _check_row_id_column(dataset.column_names, row_id_column)
    table = dataset.with_format("arrow")[:]
    table = table.append_column(row_id_column, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    blocks = [table.slice(i, batch_size) for i in range(0, max(table.num_rows, 1), batch_size)]
    return ray.data.from_arrow(blocks), table.num_rows


def _check_row_id_column(columns: list[str], row_id_column: str) -> None:
    if row_id_column in columns:
        raise ValueError(f"The input already has a `{row_id_column}` column; pass another `row_id_column=`.")


def _parquet_pieces(paths: list) -> tuple[list[dict], list[str]]:
    """Every row group of every parquet file, with the position of its first row in the whole input; the columns."""
    import pyarrow.parquet as pq

    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"No parquet file or folder at `{path}`.")
    if not files:
        raise FileNotFoundError(f"No `.parquet` files under {paths}.")
    pieces, offset, columns = [], 0, []
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        columns = metadata.schema.to_arrow_schema().names
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            pieces.append({"path": os.path.abspath(path), "row_group": group, "offset": offset, "num_rows": rows})
            offset += rows
    return pieces, columns


def _read_row_groups(pieces, row_id_column: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for piece in pieces.to_pylist():
        table = pq.ParquetFile(piece["path"]).read_row_group(piece["row_group"])
        ids = np.arange(piece["offset"], piece["offset"] + table.num_rows, dtype=np.int64)
        tables.append(table.append_column(row_id_column, pa.array(ids)))
    return pa.concat_tables(tables)


def _to_dataset(table, features):
    """A `datasets.Dataset` of the result; input columns keep the input's features (class labels, images...)."""
    import datasets
    from datasets.table import InMemoryTable

    table = table.replace_schema_metadata(None)
    inferred = datasets.Features.from_arrow_schema(table.schema)
    if features is not None:
        inferred.update({name: feature for name, feature in features.items() if name in inferred})
    return datasets.Dataset(
        InMemoryTable(table.cast(inferred.arrow_schema)), info=datasets.DatasetInfo(features=inferred)
    )


def _quiet_progress_bars_like_datasets() -> None:
    # `datasets.disable_progress_bars()` (and HF_DATASETS_DISABLE_PROGRESS_BARS) silence Ray Data's bars too.
    from datasets.utils import are_progress_bars_disabled
    from ray.data import DataContext

    if are_progress_bars_disabled():
        DataContext.get_current().enable_progress_bars = False
