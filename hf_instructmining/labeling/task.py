"""One labelling task, and the set-up every runner shares: the sequential runner, its worker processes and Ray tasks.

[`prepare`] checks the subsets and computes every subset's indicator statistics before any training, and builds the
context recorded with each label; [`label_subset`] finetunes and evaluates on one subset and writes its label. The
runners (`runner.py` in this process, `parallel.py` one process per device, `scale/ray_labeling.py` one Ray task per
subset) only decide where each call runs.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from .config import LabelingConfig
from .finetune import finetune_and_evaluate
from .store import LabelStore, library_versions
from .subsets import Subset


def prepare(
    subsets: Sequence[Subset] | Mapping[str, Any],
    eval_dataset,
    config: LabelingConfig,
    scored_pool=None,
    indicators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Subset], dict[str, dict], dict[str, Any]]:
    """The subsets as [`Subset`]s, each one's indicator statistics, and the context recorded with every label.

    Every subset's indicators are checked here, so a missing column fails before any training starts.
    """
    from .stats import indicator_stats, resolve_indicators

    subsets = as_subsets(subsets)
    specs = resolve_indicators(indicators, scored_pool, subsets)
    stats = {s.subset_id: indicator_stats(s, scored_pool, list(specs)) for s in subsets}
    context = {"eval_set": eval_identity(eval_dataset), "indicator_specs": specs, "labeling_config": config.to_dict()}
    return subsets, stats, context


def label_subset(
    subset: Subset,
    stats: dict,
    eval_dataset,
    config: LabelingConfig,
    store: LabelStore,
    context: dict,
    metrics: Any = None,
):
    """Finetune and evaluate on one subset, then write its `"subset_done"` record (the label).

    Without loaded `metrics`, the metric modules named in `context["metrics"]` are loaded from their script paths
    (how a worker process gets them).
    """
    if metrics is None and context.get("metrics"):
        metrics = [source["path"] for source in context["metrics"]]
    metadata = {"eval_set": context["eval_set"]}
    result = finetune_and_evaluate(
        subset.dataset,
        eval_dataset,
        config,
        store=store,
        subset_id=subset.subset_id,
        metadata=metadata,
        metrics=metrics,
    )
    return store.append(
        {
            "kind": "subset_done",
            "subset_id": subset.subset_id,
            **result,
            "composition": subset.composition,
            "ratios": subset.ratios,
            "subset_seed": subset.seed,
            "indicator_means": {col: s["mean"] for col, s in stats.items()},
            "indicator_stats": stats,
            **context,
            "library_versions": library_versions(),
        }
    )


def as_subsets(subsets) -> list[Subset]:
    """[`Subset`]s from a list of them or a dict of id -> rows; ids must be unique."""
    if isinstance(subsets, Mapping):
        subsets = [Subset(str(k), ds, composition={}, ratios={}, seed=None) for k, ds in subsets.items()]
    subsets = list(subsets)
    if not subsets or not all(isinstance(s, Subset) for s in subsets):
        raise TypeError("`subsets` must be a non-empty list from `sample_subsets` or a dict of id -> Dataset.")
    ids = [s.subset_id for s in subsets]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Subset ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}.")
    return subsets


def eval_identity(eval_dataset) -> dict:
    """The eval set's fingerprint and size (per name for a dict of sets), recorded with each label."""
    if isinstance(eval_dataset, Mapping):
        return {
            "fingerprint": {name: getattr(ds, "_fingerprint", None) for name, ds in eval_dataset.items()},
            "num_rows": {name: len(ds) for name, ds in eval_dataset.items()},
        }
    return {"fingerprint": getattr(eval_dataset, "_fingerprint", None), "num_rows": len(eval_dataset)}
