"""Label several subsets at once: one worker process per device, one subset at a time on each.

Workers start with the `spawn` method (CUDA cannot be forked). Each takes one device from a queue when it
starts and, for `cuda:<i>`, sets `CUDA_VISIBLE_DEVICES=<i>` before torch loads, so the trainer in that process
only sees its own GPU. Every worker appends to the same `LabelStore` file, which locks each write.
"""

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed


logger = logging.getLogger(__name__)

_WORKER_DEVICE: str | None = None


def _take_device(queue) -> None:
    global _WORKER_DEVICE
    device = queue.get()
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        device = "cuda"
    _WORKER_DEVICE = device


def _label_on_worker(subset, stats, eval_dataset, config, store_path, context):
    from .runner import label_subset
    from .store import LabelStore

    config = dataclasses.replace(config, device=_WORKER_DEVICE, devices=None)
    return label_subset(subset, stats, eval_dataset, config, LabelStore(store_path), context)["subset_id"]


def label_in_parallel(
    jobs, eval_dataset, config, store_path: str, context: dict, devices: list[str], on_done: Callable
):
    """Run `label_subset` for each `(subset, stats)` job on a pool with one worker per device."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    for device in devices:
        queue.put(device)
    logger.info("Labelling %d subsets on %d devices: %s", len(jobs), len(devices), devices)
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_take_device, initargs=(queue,)) as pool:
        futures = [
            pool.submit(_label_on_worker, subset, stats, eval_dataset, config, store_path, context)
            for subset, stats in jobs
        ]
        for future in as_completed(futures):
            logger.info("Subset %s labelled.", future.result())
            on_done()
