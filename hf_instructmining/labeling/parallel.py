"""Label several subsets at once: one worker process per device, each claiming one subset after another.

Workers start with the `spawn` method (CUDA cannot be forked). For `cuda:<i>` a worker sets
`CUDA_VISIBLE_DEVICES=<i>` before torch loads, so the trainer in that process only sees its own GPU. Each worker
runs the claim loop of the single-process runner ([`~hf_instructmining.labeling.claims.claim_each`]) on the shared
`LabelStore`: it takes the next subset that nobody holds, and when a worker dies (a SIGKILL, an out-of-memory kill)
the others take its subset over. The first error stops the other workers after their current subset and is raised
here. Each worker talks to this process over a pipe of its own, never through a shared lock that a killed worker
could leave held.
"""

import dataclasses
import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable
from multiprocessing.connection import wait


logger = logging.getLogger(__name__)

_POLL_S = 1.0


def label_in_parallel(
    subsets: list,
    stats: dict,
    eval_dataset,
    config,
    store_path: str,
    context: dict,
    devices: list[str],
    lease_s: float,
    on_progress: Callable[[], None],
) -> None:
    """Label `subsets` with one worker process per device; returns when no worker is left."""
    from .store import LabelStore

    ctx = multiprocessing.get_context("spawn")
    workers, pipes = [], {}
    logger.info("Labelling %d subsets with one worker per device: %s", len(subsets), devices)
    errors: list[BaseException] = []
    try:
        for device in devices:
            ours, theirs = ctx.Pipe()
            args = (device, subsets, stats, eval_dataset, config, store_path, context, lease_s, theirs)
            workers.append(ctx.Process(target=_work, args=args, name=f"labelling-{device}"))
            workers[-1].start()
            theirs.close()  # the worker holds its end now: when it dies, ours reads end-of-file
            pipes[ours] = workers[-1]
        while pipes:
            for pipe in wait(list(pipes), timeout=_POLL_S):
                try:
                    kind, payload = pipe.recv()
                except EOFError:  # the worker exited, or died
                    _report_exit(pipes.pop(pipe))
                    continue
                if kind == "done":
                    logger.info("Subset %s labelled.", payload)
                    on_progress()
                else:
                    errors.append(payload)
                    _stop(pipes)
    except BaseException:
        _stop(pipes)  # Ctrl-C reaches the workers too; the others stop after their current subset
        raise
    finally:
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    left = {s.subset_id for s in subsets} - LabelStore(store_path).finished_subsets()
    if left:
        codes = {worker.name: worker.exitcode for worker in workers}
        raise RuntimeError(
            f"Every labelling worker stopped (exit codes {codes}) with {len(left)} subset(s) unfinished, e.g. "
            f"{sorted(left)[:3]}; run again to resume them."
        )


def _report_exit(worker) -> None:
    worker.join()
    if worker.exitcode and worker.exitcode < 0:
        logger.warning("Worker %s died (signal %d); the others take over its subset.", worker.name, -worker.exitcode)


def _stop(pipes: dict) -> None:
    for pipe in pipes:
        try:
            pipe.send("stop")
        except OSError:  # that worker is already gone
            pass


class _StopSignal:
    """The parent's "stop" on the worker's pipe, read like a `threading.Event` by the claim loop."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.stopped = False

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float) -> bool:
        self.stopped = self.stopped or self.pipe.poll(timeout)
        return self.stopped


def _work(device: str, subsets, stats, eval_dataset, config, store_path: str, context, lease_s, pipe) -> None:
    """A worker process: claim and label subsets until none is left, or until told to stop."""
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        device = "cuda"
    from .claims import Lease, claim_each
    from .store import LabelStore
    from .task import label_subset

    config = dataclasses.replace(config, device=device, devices=None)
    store = LabelStore(store_path)
    by_id = {s.subset_id: s for s in subsets}
    try:
        for claim in claim_each(store, list(by_id), lease_s=lease_s, stop=_StopSignal(pipe)):
            with Lease(store, claim):
                label_subset(by_id[claim.subset_id], stats[claim.subset_id], eval_dataset, config, store, context)
            pipe.send(("done", claim.subset_id))
    except Exception as err:
        logger.exception("Labelling failed in worker %s.", device)  # the traceback stays with this process
        pipe.send(("error", _picklable(err)))


def _picklable(err: Exception) -> Exception:
    """The error itself when it crosses processes intact, else a `RuntimeError` with its message."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # any failure to pickle or rebuild it (e.g. an argument that does not pickle)
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err
