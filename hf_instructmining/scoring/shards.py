"""Score a dataset shard by shard into a checkpoint folder, then read every shard back as one memory-mapped dataset.

The steps are those of an uninterrupted run (`steps.py`): per-row indicators batch by batch, KNN as embed then one
exact search over all rows, then the rule's prediction. Only where the results live changes: each shard's columns
and KNN embeddings go to a shard file of the [`~hf_instructmining.scoring.checkpoint.Checkpoint`], the search starts
once every shard is on disk, and the returned dataset maps those files instead of holding the columns in memory.
Memory therefore stays flat whatever the number of rows (apart from the KNN embedding matrix, which the search
needs whole).
"""

import logging
import math
from typing import Any

import numpy as np

from ..loading import resolve_device
from .checkpoint import Checkpoint
from .config import SCORE_COLUMN
from .steps import IndicatorMap, RulePrediction, ScoringPlan, embed_batch


logger = logging.getLogger(__name__)

# Rows per batch when predicting the score from the indicator columns (a vectorised formula: no model).
_PREDICT_BATCH = 8192


def score_in_shards(ds, plan: ScoringPlan, checkpoint: Checkpoint, *, batch_size: int, num_proc: int | None = None):
    """`ds` with the plan's columns, computed shard by shard into `checkpoint` (resuming what is already there).

    A progress bar counts rows over the whole job (starting at the rows already on disk after a resume), with
    rows/s and the time left; it is a `datasets` bar, so `disable_progress_bars()` silences it.
    """
    from datasets import Dataset, concatenate_datasets
    from datasets.utils.tqdm import tqdm

    pending = list(checkpoint.pending())
    left = sum(len(checkpoint.rows(shard)) for shard in pending)
    if pending and num_proc is None:
        # Models load before the bar starts: counted in its first batch, loading made the first time left far too long.
        for indicator in plan.indicators:
            if hasattr(indicator, "load"):
                indicator.load()
    columns = [c for i in plan.indicators for c in i.columns]
    with tqdm(
        total=len(ds), initial=len(ds) - left, unit="rows", desc=f"Computing {', '.join(columns)}", smoothing=0.1
    ) as progress:
        for shard in pending:
            rows = checkpoint.rows(shard)
            logger.debug("Shard %d: computing rows %d to %d", shard, rows.start, rows.stop - 1)
            checkpoint.write_table(
                checkpoint.shard_path(shard), _score_shard(ds, plan, rows, batch_size, num_proc, progress)
            )
            logger.debug("Shard %d: written", shard)
    shards = [Dataset.from_file(str(checkpoint.shard_path(i))) for i in range(checkpoint.num_shards)]
    parts = [concatenate_datasets(shards).select_columns([c for i in plan.per_row for c in i.columns])]
    parts += [_search(knn, checkpoint, shards) for knn in plan.whole]
    added = concatenate_datasets(parts, axis=1) if len(parts) > 1 else parts[0]
    if plan.rule is not None:
        added = concatenate_datasets([added, _predict(plan.rule, added, checkpoint)], axis=1)
    kept = ds.remove_columns([c for c in added.column_names if c in ds.column_names])
    # Provenance is recorded on the whole dataset: the score column's record holds a digest of the scored texts.
    return plan.attach_provenance(concatenate_datasets([kept, added], axis=1))


def _score_shard(ds, plan: ScoringPlan, rows: range, batch_size: int, num_proc: int | None, progress):
    """One shard's per-row indicator columns and KNN embeddings, as a pyarrow table."""
    import pyarrow as pa

    columns: dict[str, list[float]] = {c: [] for i in plan.per_row for c in i.columns}
    embeddings: dict[str, list[np.ndarray]] = {i.columns[0]: [] for i in plan.whole}
    valid: dict[str, list[np.ndarray]] = {i.columns[0]: [] for i in plan.whole}
    if num_proc is not None and plan.per_row:
        # Workers of `Dataset.map`, one GPU each in turn as in an unsharded run; results stay in memory (one shard).
        computed = ds.select(rows).map(
            IndicatorMap(plan.per_row, offset=rows.start),
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            with_rank=True,
            num_proc=num_proc,
            keep_in_memory=True,
            remove_columns=ds.column_names,
            desc=f"Rows {rows.start} to {rows.stop - 1}",
        )
        columns = {c: computed[c] for c in columns}
    for start in range(rows.start, rows.stop, batch_size):
        stop = min(start + batch_size, rows.stop)
        if plan.whole or num_proc is None:
            batch, indices = ds[start:stop], list(range(start, stop))
        if num_proc is None and plan.per_row:
            for column, values in IndicatorMap(plan.per_row)(batch, indices).items():
                columns[column].extend(values)
        for knn in plan.whole:
            vectors, ok = embed_batch(knn, batch, indices)
            embeddings[knn.columns[0]].append(vectors)
            valid[knn.columns[0]].append(ok)
        progress.update(stop - start)
    table = {c: pa.array(v, type=pa.float64()) for c, v in columns.items()}
    for column, vectors in embeddings.items():
        matrix = np.concatenate(vectors)
        table[f"__embedding_{column}"] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
        table[f"__valid_{column}"] = pa.array(np.concatenate(valid[column]))
    return pa.table(table)


def _search(knn, checkpoint: Checkpoint, shards: list) -> Any:
    """The KNN column over all rows, searched once from the shards' embeddings (and kept in the checkpoint)."""
    from datasets import Dataset

    column = knn.columns[0]
    path = checkpoint.path(f"search-{column}")
    if not path.exists():
        import pyarrow as pa

        valid = np.concatenate([np.asarray(s.data.column(f"__valid_{column}"), dtype=bool) for s in shards])
        matrix: np.ndarray | None = None
        at = 0
        for shard in shards:
            ok = np.asarray(shard.data.column(f"__valid_{column}"), dtype=bool)
            array = shard.data.column(f"__embedding_{column}").combine_chunks()
            vectors = array.values.to_numpy().reshape(len(array), array.type.list_size)[ok]
            if matrix is None:
                matrix = np.empty((int(valid.sum()), vectors.shape[1]), dtype=np.float32)
            matrix[at : at + len(vectors)] = vectors
            at += len(vectors)
        values = np.full(len(valid), math.nan)
        if valid.any():
            logger.info("Searching the %d nearest neighbours of %d rows for %s", knn.k, len(matrix), column)
            values[valid] = knn.kth_distances(matrix, device=resolve_device(knn.device))
        checkpoint.write_table(path, pa.table({column: pa.array(values, type=pa.float64())}))
    return Dataset.from_file(str(path))


def _predict(rule, indicators, checkpoint: Checkpoint):
    """The score column, predicted batch by batch from the indicator columns (and kept in the checkpoint)."""
    import pyarrow as pa
    from datasets import Dataset

    path = checkpoint.path("score")
    if not path.exists():
        predict = RulePrediction(rule)
        schema = pa.schema([(SCORE_COLUMN, pa.float64())])
        batches = (
            pa.record_batch([pa.array(predict(batch)[SCORE_COLUMN], type=pa.float64())], schema=schema)
            for batch in indicators.select_columns(rule.columns).iter(batch_size=_PREDICT_BATCH)
        )
        checkpoint.write_batches(path, schema, batches)
    return Dataset.from_file(str(path))
