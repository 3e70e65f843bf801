"""Label subsets and search subset sizes on a Ray cluster: each finetuning is a Ray task with its own GPU.

Results go into the same [`~hf_instructmining.LabelStore`] as the single-process runner, with the same records, so
a run can move between one machine and a cluster and resume either way. The store is a file: on a cluster it must
sit on a file system every node sees and whose file locks hold between nodes (NFS does; most object-store mounts,
such as bucket FUSE mounts, do not lock). Each task claims its subset in the store before training it, as every
runner does (`labeling/claims.py`): a subset is trained once even when other runs label the same store, a task that
Ray retries after its worker died takes the dead claim over, and an interrupted attempt's partial records are
superseded.
"""

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..import_utils import require
from ..labeling.claims import DEFAULT_LEASE_S, check_lease


logger = logging.getLogger(__name__)


def run_labeling_with_ray(
    subsets: Any,
    eval_dataset: Any,
    config: Any,
    store: Any,
    *,
    scored_pool: Any = None,
    indicators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_retries: int = 3,
    claim_lease_s: float = DEFAULT_LEASE_S,
) -> list[dict]:
    """[`run_labeling`] with one Ray task per subset: as many finetunings at once as the cluster has GPUs.

    Subsets the store already finished are skipped; the others are submitted at once and Ray runs each on a free
    GPU (or CPU slot). A task whose worker dies (a lost node, an out-of-memory kill) is retried up to
    `max_retries` times. Subsets that another run on the same store is training are left to it; the driver waits
    for them, and submits a task for any whose worker died.

    Args:
        subsets (`list[Subset]` or `dict[str, datasets.Dataset]`): from [`sample_subsets`], or id -> rows.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`): the evaluation set(s).
        config ([`LabelingConfig`]): how to finetune; `device` and `devices` are set per task.
        store ([`LabelStore`] or `str`): where labels go; a path every node can reach.
        scored_pool (`datasets.Dataset` or `dict`, *optional*): the scored source(s) (see [`run_labeling`]).
        indicators (`list[str]` or `dict[str, dict]`, *optional*): the indicator columns to average.
        num_gpus (`float`, *optional*): GPUs per finetuning; 1 when the cluster has GPUs, else 0 (CPU).
        num_cpus (`float`, *optional*, defaults to `1`): CPUs per finetuning.
        max_retries (`int`, *optional*, defaults to `3`): retries of a task whose worker died.
        claim_lease_s (`float`, *optional*, defaults to `300.0`): how long a claim on a subset lasts without renewal
            (see [`run_labeling`]); a subset whose node was lost waits this long before another task takes it over.

    Returns:
        `list[dict]`: the `"subset_done"` record of every subset, in the order given.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig, run_labeling_with_ray
    >>> # ray.init(address="auto")  # the cluster; or ray.init() for this machine
    >>> # run_labeling_with_ray(subsets, eval_ds, LabelingConfig(model_name_or_path="..."), "/shared/labels.jsonl")
    ```
    """
    from ..labeling.store import LabelStore
    from ..labeling.task import prepare

    check_lease(claim_lease_s)
    ray = _ray()
    store = LabelStore(store) if isinstance(store, str | os.PathLike) else store
    subsets, stats, context = prepare(subsets, eval_dataset, config, scored_pool, indicators)
    finished = store.finished_subsets()
    pending = [s for s in subsets if s.subset_id not in finished]
    num_gpus = _gpus_per_task(ray, num_gpus)
    task_config = dataclasses.replace(config, device="cuda" if num_gpus else "cpu", devices=None)
    task = ray.remote(_label_task).options(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=max_retries)
    eval_ref = ray.put(eval_dataset)
    logger.info(
        "Labelling %d subsets as Ray tasks (%s GPU each); %d already in %s.",
        len(pending),
        num_gpus,
        len(subsets) - len(pending),
        store.path,
    )
    by_id = {s.subset_id: s for s in subsets}

    def submit(subset_id: str):
        return task.remote(
            by_id[subset_id], stats[subset_id], eval_ref, task_config, store.path, context, claim_lease_s
        )

    _label_all(ray, store, list(by_id), submit, claim_lease_s)
    done = {r["subset_id"]: r for r in store.records("subset_done")}
    return [done[s.subset_id] for s in subsets if s.subset_id in done]


def _label_task(subset, stats: dict, eval_dataset, config, store_path: str, context: dict, lease_s: float) -> bool:
    """Claim the subset and label it; `False` when it is finished or another live worker holds it."""
    from ..labeling.claims import Lease, claim_next
    from ..labeling.store import LabelStore
    from ..labeling.task import label_subset

    store = LabelStore(store_path)
    # A task Ray retries after its worker died takes that worker's claim over (the process is gone), or finds the
    # subset finished when the first attempt wrote its label just before dying.
    claim, _ = claim_next(store, [subset.subset_id], lease_s=lease_s)
    if claim is None:
        return False
    with Lease(store, claim):
        label_subset(subset, stats, eval_dataset, config, store, context)
    return True


def search_subset_size_with_ray(
    scored: Any,
    *,
    eval_dataset: Any,
    labeling_config: Any,
    store: Any = None,
    config: Any = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    max_retries: int = 3,
    **search_options,
) -> Any:
    """[`search_subset_size`] with each finetuning trial run as a Ray task on a cluster GPU, several at once.

    As many trials run at once as the cluster has room for when the search starts (its GPUs divided by
    `num_gpus`, or its CPUs by `num_cpus` on a CPU cluster), but no more than a third of `num_samples`, unless
    `config.max_concurrent_trials` says otherwise: the searcher proposes a new size whenever a trial finishes. The
    driver needs no GPU. The search has the same id as the single-process search of the same data and settings,
    whatever the concurrency, so either resumes the other's trials from `store`. Ctrl-C cancels the trials in flight.

    Args:
        scored (`datasets.Dataset`): the scored candidates.
        eval_dataset (`datasets.Dataset`): the evaluation set of every trial.
        labeling_config ([`LabelingConfig`]): base model and training settings of every trial.
        store ([`LabelStore`] or `str`, *optional*): where trials persist; a path every node can reach.
        config ([`SearchConfig`], *optional*): scale, resolution, seed, score column, search id, and
            `max_concurrent_trials` (by default what the cluster holds, at most a third of `num_samples`).
        num_gpus (`float`, *optional*): GPUs per trial; 1 when the cluster has GPUs, else 0 (CPU).
        num_cpus (`float`, *optional*, defaults to `1`): CPUs per trial.
        max_retries (`int`, *optional*, defaults to `3`): retries of a trial whose worker died.
        **search_options: `low`, `high`, `num_samples`, `time_budget_s`, `random_baseline` (see
            [`search_subset_size`]).

    Returns:
        [`SearchResult`]

    Example:

    ```py
    >>> from hf_instructmining import search_subset_size_with_ray
    >>> # search_subset_size_with_ray(scored, eval_dataset=eval_ds, labeling_config=config, store="/shared/s.jsonl",
    >>> #                             low=1000, high=100_000, num_samples=20)
    ```
    """
    from ..search import SearchConfig, search_subset_size
    from ..search.api import DEFAULT_NUM_SAMPLES, finetune_search_id, open_store

    ray = _ray()
    config = config or SearchConfig()
    store = open_store(store)
    if config.search_id is None:
        # The id the built-in trial gets, so that local and Ray searches of the same data share their trials.
        config = dataclasses.replace(
            config, search_id=finetune_search_id(scored, config, labeling_config, eval_dataset)
        )
    num_gpus = _gpus_per_task(ray, num_gpus)
    if config.max_concurrent_trials is None:
        slots = _cluster_slots(ray, num_gpus, num_cpus)
        # Sizes proposed while n trials run are chosen without their results: past about a third of the budget at
        # once, the search loses its guidance (docs/scaling.md), so the rest of the cluster is better left idle.
        num_samples = search_options.get("num_samples", DEFAULT_NUM_SAMPLES)
        if num_samples is not None:
            slots = min(slots, max(1, num_samples // 3))
        config = dataclasses.replace(config, max_concurrent_trials=slots)
    logger.info("Search %s: up to %d trials at once as Ray tasks.", config.search_id, config.max_concurrent_trials)
    task_config = dataclasses.replace(labeling_config, device="cuda" if num_gpus else "cpu", devices=None)
    task = ray.remote(_trial_task).options(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=max_retries)
    shared = [ray.put(scored), ray.put(eval_dataset), task_config, config, store.path if store is not None else None]

    in_flight = set()

    def objective(k: int, selection: str = "rule") -> float:
        # Each of the search's trial threads waits here on its own task: n threads, n tasks on n GPUs.
        ref = task.remote(*shared, k, selection)
        in_flight.add(ref)
        try:
            return ray.get(ref)
        finally:
            in_flight.discard(ref)

    try:
        return search_subset_size(scored, objective=objective, store=store, config=config, **search_options)
    except KeyboardInterrupt:
        # The search returned at once; without this its tasks would run on, and the driver would wait for them.
        for ref in list(in_flight):
            ray.cancel(ref)
        raise


def _trial_task(scored, eval_dataset, labeling_config, config, store_path: str | None, k: int, selection: str):
    from ..labeling.store import LabelStore
    from ..search.api import finetune_trial
    from ..search.trials import trial_subset_id

    store = LabelStore(store_path) if store_path else None
    trial = finetune_trial(scored, eval_dataset, labeling_config, config, store, config.search_id)
    return trial(k, selection, trial_subset_id(config.search_id, selection, k))


def _ray():
    require("ray", "the Ray labelling and search")
    import ray

    if not ray.is_initialized():
        logger.info("Ray is not initialised: starting a local instance with `ray.init()`.")
        ray.init()
    return ray


def _gpus_per_task(ray, num_gpus: float | None) -> float:
    if num_gpus is None:
        return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return num_gpus


def _cluster_slots(ray, num_gpus: float, num_cpus: float) -> int:
    """How many tasks of `num_gpus` GPUs (or, without GPUs, `num_cpus` CPUs) the cluster runs at once now."""
    resource, per_task = ("GPU", num_gpus) if num_gpus else ("CPU", num_cpus)
    if not per_task:
        return 1
    return max(1, int(ray.cluster_resources().get(resource, 0) // per_task))


def _label_all(ray, store, ids: list[str], submit, lease_s: float) -> None:
    """Submit a task for every free unfinished subset, wait for them, and again until every subset is finished.

    Subsets that live workers of other runs hold are waited for, and submitted when their claim dies. Shows subsets
    done/total; the first task error is raised.
    """
    import time

    from datasets.utils.tqdm import tqdm

    from ..labeling.claims import free_subsets, poll_interval

    with tqdm(total=len(ids), unit="subset", desc="Labelling subsets") as bar:
        while True:
            free, busy = free_subsets(store, ids)
            bar.update(len(ids) - len(free) - len(busy) - bar.n)
            if not free and not busy:
                return
            if not free:
                logger.info("Waiting for %d subset(s) that other workers are labelling.", len(busy))
                time.sleep(poll_interval(lease_s))
                continue
            refs = {submit(subset_id): subset_id for subset_id in free}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                if ray.get(ready[0]):
                    logger.info("Subset %s labelled.", refs[ready[0]])
                    bar.update(1)
