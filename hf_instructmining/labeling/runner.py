"""Label training subsets: finetune on each with TRL's `SFTTrainer` and record its eval loss (Section 3.2).

`run_labeling` runs [`~hf_instructmining.finetune_and_evaluate`] (in `finetune.py`) on each subset, skipping those a
`LabelStore` already has, and records each subset's eval loss with its mean indicator values: the rows that
[`~hf_instructmining.fit_rule`] regresses.

Subsets run one after another on one device. When `LabelingConfig.devices` names several devices (e.g.
`["cuda:0", "cuda:1"]`, or `"auto"` with several GPUs visible), one worker process per device labels one subset
at a time. Every worker, and every other `run_labeling` or `run_labeling_with_ray` call on the same store (on this
machine or another one sharing the file system), claims a subset in the store before training it, so each subset is
trained once and a subset whose worker died goes to another (see `claims.py`).
"""

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .claims import DEFAULT_LEASE_S, Lease, check_lease, claim_each
from .config import LabelingConfig
from .store import LabelStore
from .subsets import Subset
from .task import label_subset, prepare


logger = logging.getLogger(__name__)


def run_labeling(
    subsets: Sequence[Subset] | Mapping[str, Any],
    eval_dataset,
    config: LabelingConfig,
    store: LabelStore | str,
    *,
    scored_pool=None,
    indicators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Any = None,
    claim_lease_s: float = DEFAULT_LEASE_S,
) -> list[dict]:
    """Label every subset: finetune on it, evaluate, and record its eval loss with its mean indicators.

    Subsets that `store` already finished are skipped; unfinished ones (e.g. interrupted by a crash) are redone.
    Several workers may label the same subsets into one store at once (processes on one machine, or machines sharing
    the file system): each claims a subset in the store before training it and checks again what is left after every
    subset, so each subset is trained once. A worker that finds only subsets that others are training waits for them,
    and takes over the subset of a worker that died. Progress shows subsets done/total and the time left.

    Args:
        subsets (`list[Subset]` or `dict[str, datasets.Dataset]`): from [`sample_subsets`], or id -> rows.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`): the evaluation set(s).
        config ([`LabelingConfig`]): how to finetune.
        store ([`LabelStore`] or `str`): where labels go (a path opens one).
        scored_pool (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*): the scored source(s) the
            subsets were drawn from; each subset row's indicators are found by its `row_index` (and `source` for
            a dict). Without it, the indicator columns must be in the subsets' own rows.
        indicators (`list[str]` or `dict[str, dict]`, *optional*): the indicator columns to average, or column ->
            indicator options (recorded so a fitted rule can rebuild them); defaults to every known indicator column
            found.
        metrics (`str`, `evaluate.EvaluationModule` or a list of them, *optional*): also label each subset with
            metrics of greedy answers to `config.generation_num_samples` eval prompts (the same prompts for every
            subset), e.g. the path of a local copy of evaluate's `rouge` or `exact_match` module. The scores are
            recorded next to the eval loss (`eval_scores` in `"subset_done"`, `scores` in `"eval"` records), so
            `store.labels()` has a column per score (e.g. `eval_rougeL`) and `fit_rule(store, target="eval_rougeL",
            higher_is_better=True)` fits a rule to it. Metrics are loaded before any training.
        claim_lease_s (`float`, *optional*, defaults to `300.0`): how long a claim on a subset lasts without
            renewal. A training worker renews its claim every third of it; when a worker on another machine is gone
            (a lost node), its subset waits this long before another worker takes it over. A worker that died on this
            machine is seen at once.

    Returns:
        `list[dict]`: the `"subset_done"` record of every subset, in the order given.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig, LabelStore, run_labeling, sample_subsets
    >>> # subsets = sample_subsets({"alpaca": scored_a, "dolly": scored_b}, n_subsets=40, subset_size=1000)
    >>> # run_labeling(subsets, eval_ds, LabelingConfig(model_name_or_path="..."), LabelStore("labels.jsonl"))
    ```
    """
    from .metrics import load_metrics, metric_sources

    check_lease(claim_lease_s)
    store = LabelStore(store) if isinstance(store, str | os.PathLike) else store
    subsets, stats, context = prepare(subsets, eval_dataset, config, scored_pool, indicators)
    metrics = (load_metrics(metrics) or None) if metrics is not None else None
    finished = store.finished_subsets()
    pending = [s for s in subsets if s.subset_id not in finished]
    if len(pending) < len(subsets):
        logger.info(
            "%d of %d subsets already labelled in %s; skipping them.",
            len(subsets) - len(pending),
            len(subsets),
            store.path,
        )
    if metrics:
        # Recorded with each label, and how worker processes reload the modules.
        context["metrics"] = metric_sources(metrics)
        unscored = [r["subset_id"] for r in store.records("subset_done") if not r.get("eval_scores")]
        if unscored:
            logger.warning(
                "%d finished subset(s) in %s have no generated-answer scores and are not redone (e.g. %s); a fit "
                "on a score needs every subset scored.",
                len(unscored),
                store.path,
                unscored[:3],
            )
    devices = _parallel_devices(config.devices)
    parallel = len(devices) > 1 and len(pending) > 1
    if parallel and metrics:
        _check_reloadable(metrics)
    from datasets.utils.tqdm import tqdm

    ids = [s.subset_id for s in subsets]
    with tqdm(total=len(subsets), initial=len(subsets) - len(pending), unit="subset", desc="Labelling subsets") as bar:

        def show_progress() -> None:  # counts the subsets every worker finished, not only this one's
            bar.update(len(store.finished_subsets() & set(ids)) - bar.n)

        if parallel:
            from .parallel import label_in_parallel

            label_in_parallel(
                subsets, stats, eval_dataset, config, store.path, context, devices, claim_lease_s, show_progress
            )
        else:
            by_id = {s.subset_id: s for s in subsets}
            for claim in claim_each(store, ids, lease_s=claim_lease_s):
                with Lease(store, claim):
                    subset = by_id[claim.subset_id]
                    label_subset(
                        subset, stats[subset.subset_id], eval_dataset, config, store, context, metrics=metrics
                    )
                show_progress()
    done = {r["subset_id"]: r for r in store.records("subset_done")}
    return [done[s.subset_id] for s in subsets if s.subset_id in done]


def _check_reloadable(metrics: Mapping[str, Any]) -> None:
    """Worker processes reload each metric from its `evaluate` script: refuse, before any training, one they cannot."""
    import evaluate

    from .metrics import metric_sources

    for source, module in zip(metric_sources(metrics), metrics.values(), strict=True):
        if not isinstance(module, evaluate.EvaluationModule) or not source["path"]:
            raise ValueError(
                f"Labelling on several devices reloads each metric in its worker process from its `evaluate` script, "
                f"and the metric `{source['name']}` ({type(module).__name__}) is not an `evaluate` module loaded from "
                "one: pass it as a local module path, or label on one device."
            )


def _parallel_devices(devices) -> list[str]:
    if devices is None:
        return []
    if devices == "auto":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if count > 1 else []
    return list(devices)
