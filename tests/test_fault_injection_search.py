"""Fault injection for the subset-size search: SIGKILL a search process at many points, run it again, and check that
nothing was lost, that no finished trial ran twice, and that the resumed search ends where one never killed ends.

Each search runs in a child process (`_CHILD`) on a cheap objective that appends every call it starts to a log
file (flushed and fsynced before the trial does anything else), so the parent knows which trial was in flight
when it killed the child.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import SearchConfig, search_subset_size
from hf_instructmining.labeling.store import LabelStore


ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"low": 10, "high": 2_000, "num_samples": 10, "random_baseline": True}
# The child: one search over the store, `objective` logging each call it starts; when the log reaches `block_at`
# lines (counted over every child so far) that call hangs, so the parent can kill it mid-trial.
_CHILD = textwrap.dedent(
    """
    import json, math, os, sys, time
    import numpy as np
    from datasets import Dataset
    from hf_instructmining import SearchConfig, search_subset_size

    store, calls, out, block_at, seconds, search = sys.argv[1:7]
    block_at, seconds = int(block_at), float(seconds)

    def objective(k, selection="rule"):
        with open(calls, "a") as f:
            f.write(f"{selection} {k}\\n")
            f.flush()
            os.fsync(f.fileno())
        with open(calls) as f:
            if sum(1 for _ in f) == block_at:
                time.sleep(600)
        time.sleep(seconds)
        return (math.log(k) - math.log(300)) ** 2 + (0.1 / math.log(k) if selection == "random" else 0.0)

    scored = Dataset.from_dict({"instruct_score": np.linspace(-1, 1, 2_000)})
    result = search_subset_size(
        scored, objective=objective, store=store, config=SearchConfig(search_id="faults"), **json.loads(search)
    )
    with open(out, "w") as f:
        json.dump(result.to_dict(), f)
    """
)


def objective(k: int, selection: str = "rule") -> float:
    return (math.log(k) - math.log(300)) ** 2 + (0.1 / math.log(k) if selection == "random" else 0.0)


def summary(result: dict) -> tuple:
    trace = [(t["trial"], t["k"], t["loss"], t["selection"]) for t in result["trace"]]
    return result["best_k"], result["best_loss"], trace


class Harness:
    """Runs the child search again and again on one store, killing it where asked, and keeps the evidence."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.script = folder / "child.py"
        self.script.write_text(_CHILD)
        self.store, self.calls, self.out = folder / "trials.jsonl", folder / "calls.log", folder / "result.json"
        self.calls.touch()
        self.kills = 0
        self.lost_in_flight: list[tuple[str, int]] = []  # started, killed before it was recorded

    def start(self, block_at: int = 0, seconds: float = 0.0) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, str(self.script), str(self.store), str(self.calls), str(self.out)]
        command += [str(block_at), str(seconds), json.dumps(SEARCH)]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def started(self) -> list[tuple[str, int]]:
        lines = self.calls.read_text().splitlines()
        return [(selection, int(k)) for selection, k in (line.split() for line in lines)]

    def kill(self, child: subprocess.Popen, when) -> None:
        """SIGKILL the child once `when()` is true (it must not finish first), and note the trial it had in flight."""
        deadline = time.monotonic() + 120
        while not when():
            assert child.poll() is None, f"the search ended before the kill point: {child.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        self.kills += 1
        started = self.started()
        recorded = {(r["selection"], r["k"]) for r in LabelStore(self.store).records("search_trial")}
        if started and started[-1] not in recorded:
            self.lost_in_flight.append(started[-1])

    def finish(self) -> dict:
        child = self.start()
        _, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors.decode()
        return json.loads(self.out.read_text())


@pytest.fixture(scope="module")
def uninterrupted() -> tuple:
    scored = Dataset.from_dict({"instruct_score": np.linspace(-1, 1, 2_000)})
    result = search_subset_size(scored, objective=objective, config=SearchConfig(search_id="faults"), **SEARCH)
    return summary(result.to_dict())


def check(harness: Harness, result: dict, expected: tuple) -> None:
    assert summary(result) == expected
    # Nothing lost or stored twice: one record per trial, numbered without gaps, every line of the store readable.
    records = LabelStore(harness.store).records("search_trial")
    assert sorted(r["trial"] for r in records) == list(range(1, len(expected[2]) + 1))
    assert len({(r["selection"], r["k"]) for r in records}) == len(records)
    assert all(json.loads(line) for line in harness.store.read_text().splitlines())
    # No finished trial ran twice: a trial started again only after a kill caught it in flight, unrecorded.
    started = harness.started()
    for key in set(started):
        assert started.count(key) == 1 + harness.lost_in_flight.count(key), key


def test_sigkill_mid_trial_at_several_points(tmp_path, uninterrupted):
    harness = Harness(tmp_path)
    # Counted over every child: the first trial, a rule size, its random twin, the last trials of the budget.
    for block_at in (1, 4, 7, 12, 17, 21):
        harness.kill(harness.start(block_at=block_at), lambda n=block_at: len(harness.started()) >= n)
    check(harness, harness.finish(), uninterrupted)
    assert harness.kills == 6 and len(harness.lost_in_flight) == 6


def test_sigkill_at_random_moments(tmp_path, uninterrupted):
    # Trials of 10 ms; each kill comes 0-30 ms after the child has started its n-th trial in all: inside a trial,
    # while a record is written and fsynced, or while the searcher picks the next size.
    harness = Harness(tmp_path)
    rng = np.random.default_rng(0)

    def after_nth_start(n: int, delay: float):
        reached: list[float] = []

        def when() -> bool:
            if not reached:
                if len(harness.started()) < n:
                    return False
                reached.append(time.monotonic())
            return time.monotonic() - reached[0] >= delay

        return when

    for n in (2, 5, 8, 11, 14, 17):
        harness.kill(harness.start(seconds=0.01), after_nth_start(n, rng.uniform(0, 0.03)))
    check(harness, harness.finish(), uninterrupted)
    assert harness.kills == 6


def test_a_kill_after_the_last_trial_was_recorded_reruns_nothing(tmp_path, uninterrupted):
    harness = Harness(tmp_path)
    total = len(uninterrupted[2])
    # The last trial returns; the child dies before (or while) writing its result file.
    child = harness.start()
    recorded = lambda: harness.store.exists() and harness.store.read_text().count('"search_trial"') == total  # noqa: E731
    harness.kill(child, lambda: recorded() or child.poll() is not None)
    before = len(harness.started())
    check(harness, harness.finish(), uninterrupted)
    assert len(harness.started()) == before
