"""Subset claims: exclusive across processes, renewed while held, taken over from dead or silent workers."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hf_instructmining import LabelStore
from hf_instructmining.labeling.claims import (
    Lease,
    claim_each,
    claim_next,
    free_subsets,
    process_is_gone,
    release,
    renew,
)


# Claims every subset it can and marks it done: several of these at once must split the subsets between them.
WORKER = """
import sys
from hf_instructmining.labeling.claims import Lease, claim_each
from hf_instructmining.labeling.store import LabelStore
store = LabelStore(sys.argv[1])
for claim in claim_each(store, [f"s{i:02d}" for i in range(int(sys.argv[2]))]):
    with Lease(store, claim):
        store.append({"kind": "train_begin", "subset_id": claim.subset_id, "run_id": claim.claim_id})
        store.append({"kind": "subset_done", "subset_id": claim.subset_id, "run_id": claim.claim_id})
"""
# Claims one subset, says so, then waits to be killed.
HOLDER = """
import sys, time
from hf_instructmining.labeling.claims import claim_next
from hf_instructmining.labeling.store import LabelStore
claim, _ = claim_next(LabelStore(sys.argv[1]), ["a"])
print(claim.subset_id, flush=True)
time.sleep(600)
"""


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def test_a_subset_is_claimed_once_and_finished_subsets_never(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append({"kind": "subset_done", "subset_id": "a"})
    first, busy = claim_next(store, ["a", "b", "c"])
    second, busy = claim_next(store, ["a", "b", "c"])
    assert (first.subset_id, second.subset_id, busy) == ("b", "c", ["b"])
    assert claim_next(store, ["a", "b", "c"]) == (None, ["b", "c"])
    assert free_subsets(store, ["a", "b", "c", "d"]) == (["d"], ["b", "c"])
    release(store, first)  # a worker that failed gives its subset back at once
    third, _ = claim_next(store, ["a", "b", "c"])
    assert third.subset_id == "b" and third.claim_id != first.claim_id
    assert not renew(store, first)  # the released claim cannot come back


def test_a_renewed_claim_is_kept_and_a_silent_one_taken_over(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    held, _ = claim_next(store, ["a"], lease_s=0.6)
    with Lease(store, held) as lease:
        time.sleep(1.5)  # over twice the lease: only the renewals keep it
        assert claim_next(store, ["a"], lease_s=0.6) == (None, ["a"])
    assert not lease.lost
    silent, _ = claim_next(store, ["b"], lease_s=0.3)
    time.sleep(0.5)  # no renewal: the lease runs out
    taken, _ = claim_next(store, ["b"])
    assert taken.subset_id == "b" and not renew(store, silent)


def test_a_failing_block_releases_its_claim(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    claim, _ = claim_next(store, ["a"])
    with pytest.raises(RuntimeError), Lease(store, claim):
        raise RuntimeError("training failed")
    assert free_subsets(store, ["a"]) == (["a"], [])


def test_a_claim_from_another_machine_waits_for_its_lease(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append(
        {"kind": "claim", "subset_id": "a", "action": "take", "claim_id": "x", "lease_s": 1.0, "host": "other-node"}
    )
    start = time.monotonic()
    claims = [claim.subset_id for claim in claim_each(store, ["a"], lease_s=1.0) if not _finish(store, claim)]
    assert claims == ["a"] and time.monotonic() - start >= 0.9


def test_a_killed_holder_leaves_its_subset_at_once(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "a"
        assert claim_next(LabelStore(path), ["a"]) == (None, ["a"])  # alive: its claim holds
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    claim, _ = claim_next(LabelStore(path), ["a"])  # the default lease (minutes) has not run out: the pid tells
    assert claim is not None and claim.subset_id == "a"


def test_claim_each_waits_for_subsets_that_others_finish(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    other, _ = claim_next(store, ["a"])
    finisher = threading.Timer(0.5, lambda: store.append({"kind": "subset_done", "subset_id": "a"}))
    finisher.start()
    assert [claim.subset_id for claim in claim_each(store, ["a", "b"], lease_s=0.9) if not _finish(store, claim)] == [
        "b"
    ]
    finisher.join()
    assert store.finished_subsets() == {"a", "b"}


def test_concurrent_workers_split_the_subsets_exactly(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, path, "12"], env=_env()) for _ in range(3)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    records = [json.loads(line) for line in open(path)]
    done = [r["subset_id"] for r in records if r["kind"] == "subset_done"]
    assert sorted(done) == [f"s{i:02d}" for i in range(12)]  # every subset once, none twice
    takes = [r for r in records if r["kind"] == "claim" and r["action"] == "take"]
    assert len(takes) == 12 and len({r["pid"] for r in takes}) >= 2  # the work was shared


# Polls subset "a" until it is finished, and takes it over if its holder's claim lapses meanwhile.
COMPETITOR = """
import sys, time
from hf_instructmining.labeling.claims import claim_next
from hf_instructmining.labeling.store import LabelStore
store = LabelStore(sys.argv[1])
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    claim, busy = claim_next(store, ["a"], lease_s=60)
    if claim is not None or not busy:
        break
    time.sleep(0.05)
print("took" if claim is not None else "finished by its holder", flush=True)
"""


def _hold_gil(seconds: float) -> None:
    """Hold the GIL for `seconds`, as a long C call that does not release it would (a tokenizer or collator call).

    A thread that waits for the GIL asks its holder to drop it only after the switch interval; with the interval
    longer than the hold, this loop, which does no I/O, keeps it throughout. (One `sum` over a calibrated `range`
    held it for as long as the calibration guessed: 2.7 s instead of 4.5 on a machine whose load fell meanwhile.)
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds + 10)
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(10_000))
    finally:
        sys.setswitchinterval(previous)


def test_a_step_that_holds_the_gil_past_the_lease_keeps_its_claim(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    store = LabelStore(path)
    claim, _ = claim_next(store, ["a"], lease_s=1.5)
    ticks, stop = [time.monotonic()], threading.Event()

    def tick():  # a thread of this process, like the lease's own renewal thread
        while not stop.wait(0.05):
            ticks.append(time.monotonic())

    ticker = threading.Thread(target=tick, daemon=True)
    with Lease(store, claim) as lease:
        competitor = subprocess.Popen(
            [sys.executable, "-c", COMPETITOR, path], env=_env(), stdout=subprocess.PIPE, text=True
        )
        try:
            assert competitor.stdout.readline().strip() == "ready"
            ticker.start()
            _hold_gil(4.5)  # e.g. a long tokenizer or collator call in C that does not release the GIL
            store.append({"kind": "subset_done", "subset_id": "a"})
            assert competitor.stdout.readline().strip() == "finished by its holder"
        finally:
            stop.set()
            competitor.kill()
            competitor.wait()
    ticker.join()
    # The step did hold the GIL: no thread of this process ran for over twice the lease.
    assert max(b - a for a, b in zip(ticks[:-1], ticks[1:], strict=True)) > 2 * claim.lease_s
    assert not lease.lost


# Claims subset "a" with a short lease, holds it in a `Lease`, says so, then waits to be stopped or killed.
LEASED_HOLDER = """
import sys, time
from hf_instructmining.labeling.claims import Lease, claim_next
from hf_instructmining.labeling.store import LabelStore
store = LabelStore(sys.argv[1])
claim, _ = claim_next(store, ["a"], lease_s=1.0)
with Lease(store, claim):
    print("holding", flush=True)
    time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads process states from /proc")
def test_a_stopped_holder_loses_its_claim_and_a_killed_one_takes_its_renewal_process_along(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    holder = subprocess.Popen(
        [sys.executable, "-c", LEASED_HOLDER, path], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        [renewer] = _children(holder.pid)
        time.sleep(1.5)
        assert claim_next(LabelStore(path), ["a"]) == (None, ["a"])  # renewed past its lease
        os.kill(holder.pid, signal.SIGSTOP)  # frozen: its renewal process stops renewing too
        time.sleep(2.0)
        taken, _ = claim_next(LabelStore(path), ["a"], lease_s=60)
        assert taken is not None and taken.subset_id == "a"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait()
    deadline = time.monotonic() + 10
    while not process_is_gone(renewer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_is_gone(renewer)  # it saw its worker's end at once (its stdin closed)


def test_lease_is_checked():
    with pytest.raises(ValueError, match="lease"):
        claim_next(LabelStore.__new__(LabelStore), ["a"], lease_s=0)


def _finish(store, claim) -> None:
    store.append({"kind": "subset_done", "subset_id": claim.subset_id})
