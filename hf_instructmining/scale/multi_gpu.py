"""Score on every GPU of one machine without Ray: one `Dataset.map` worker per GPU, one model copy each.

`Dataset.map(num_proc=n, with_rank=True)` forks `n` workers and worker `rank` runs on `cuda:<rank>` (see
[`~hf_instructmining.loading.resolve_device`]). Forked workers can only use CUDA if the parent never initialised
it, so the calling process only counts GPUs (through NVML), and the one step that needs a single device, the
KNN search over every embedding, runs in a forked child process. The calling process can therefore score again,
or fork again, afterwards.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..scoring import ScoreConfig
from ..scoring.steps import IndicatorMap, RulePrediction, embed_batch, plan_scoring, search, split_target


logger = logging.getLogger(__name__)

_EMBEDDING = "__instructmining_embedding_{}"


def score_on_gpus(
    dataset: Any,
    rule_or_indicators: Any,
    *,
    models: Mapping[str, str] | None = None,
    on_invalid: str = "raise",
    format: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    reference: Any = None,
    num_gpus: int | None = None,
    batch_size: int = 256,
) -> Any:
    """`compute_indicators` spread over every visible GPU: the same columns, the same rows, `num_gpus` times faster.

    Per-row indicators and KNN embeddings run in one `Dataset.map` worker per GPU; the exact KNN search over the
    whole dataset runs once, on one GPU, in a child process; the rule's prediction is then added.

    Args:
        dataset (`datasets.Dataset`): the rows, in any supported layout.
        rule_or_indicators ([`QualityRule`], `str` or `list`): a rule (or built-in rule name, JSON file, folder or
            Hub repo), or a list of indicator columns and [`Indicator`] objects.
        models (`dict[str, str]`, *optional*): indicator column or family -> model id or path.
        on_invalid (`str`, *optional*, defaults to `"raise"`): `"raise"` on an unreadable row, or `"nan"`.
        format (`str`, *optional*): force the input layout.
        column_mapping (`dict[str, str]`, *optional*): role -> column.
        reference (`datasets.Dataset`, *optional*): a fixed neighbour set for KNN instead of the dataset itself.
        num_gpus (`int`, *optional*): worker processes, one per GPU; every visible GPU by default.
        batch_size (`int`, *optional*, defaults to `256`): rows per `map` batch.

    Returns:
        `datasets.Dataset`: `dataset` with the indicator columns (and `instruct_score`).

    Raises:
        `ValueError`: no CUDA device is visible (use `compute_indicators` on CPU).

    Example:

    ```py
    >>> from hf_instructmining import score_on_gpus
    >>> # scored = score_on_gpus(ds, "instructmining-llama2-7b")  # one worker per visible GPU
    ```
    """
    from ..loading import cuda_device_count

    visible = cuda_device_count()
    if visible == 0:
        raise ValueError("No CUDA device is visible: score on CPU with `compute_indicators`, or use `score_with_ray`.")
    num_gpus = num_gpus or visible
    config = ScoreConfig(
        models=dict(models or {}),
        device="cuda",
        on_invalid=on_invalid,
        format=format,
        column_mapping=dict(column_mapping) if column_mapping else None,
    )
    plan = plan_scoring(*split_target(rule_or_indicators), config, reference=reference, stacklevel=3)
    options = {"batched": True, "batch_size": batch_size, "with_indices": True, "with_rank": True}
    options["num_proc"] = num_gpus if num_gpus > 1 else None
    logger.info("Scoring %d rows on %d GPU(s).", len(dataset), num_gpus)
    if plan.per_row:
        columns = ", ".join(c for i in plan.per_row for c in i.columns)
        dataset = dataset.map(IndicatorMap(plan.per_row), desc=f"Computing {columns}", **options)
    for knn in plan.whole:
        column = knn.columns[0]
        embedded = dataset.map(
            _Embed(knn), remove_columns=dataset.column_names, desc=f"Embedding for {column}", **options
        )
        table = embedded.with_format("arrow")[:]
        embeddings = np.stack(table[_EMBEDDING.format(column)].to_numpy(zero_copy_only=False)).astype(np.float32)
        valid = table["valid"].to_numpy(zero_copy_only=False)
        values = _search_in_child_process(knn, embeddings, valid).tolist()
        dataset = dataset.remove_columns(column) if column in dataset.column_names else dataset
        dataset = dataset.add_column(column, values)
    if plan.rule is not None:
        dataset = dataset.map(
            RulePrediction(plan.rule), batched=True, batch_size=batch_size, desc="Computing instruct_score"
        )
    # Each column records how it was made, as from `compute_indicators`.
    return plan.attach_provenance(dataset)


class _Embed:
    """A `Dataset.map` function: one KNN indicator's embeddings of a batch, and which rows were valid."""

    def __init__(self, knn):
        self.knn = knn

    def __call__(self, batch: Mapping[str, Any], indices: Sequence[int], rank: int | None = None) -> dict:
        embeddings, valid = embed_batch(self.knn, batch, indices, rank)
        return {_EMBEDDING.format(self.knn.columns[0]): list(embeddings), "valid": valid.tolist()}


def _search_in_child_process(knn, embeddings: np.ndarray, valid: np.ndarray) -> np.ndarray:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Forked like the `map` workers: this process never initialised CUDA, so the child can (and, unlike a spawned
    # child, it needs no `if __name__ == "__main__":` guard in the caller's script).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(search, knn, embeddings, valid).result()
