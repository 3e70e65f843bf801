"""Fault injection: real labelling workers on one store, killed with SIGKILL at chosen and random points.

One harness process (`tests/fixtures/labeling_workers.py`) imports the training stack once and forks every worker,
so the whole plan below (10 kills, about 40 finetunings of one step on the tiny Llama) runs in about a minute on
two cores. Every scenario then checks the same things on its store:

- nothing lost: every record a worker wrote completely is in the store, and every line of the file is readable;
- each subset labelled once: exactly one `subset_done` per subset;
- nothing trained twice: each subset has one finished attempt, every other attempt belongs to a worker that was
  killed, and no attempt starts after the subset's label was written.
"""

import collections
import glob
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Seconds after a worker began training its first subset. Each killed worker trains 300 steps a subset, far more
# than it can finish in 2 s (with 30, two workers of a run labelled all four subsets before their timers fired and
# were not killed: 1 kill of 3), so every timer finds the worker still at work.
_RANDOM_KILLS = [round(random.Random(seed).uniform(0.0, 2.0), 2) for seed in (19, 20, 21)]
# scenario -> (number of subsets, phases run one after another, each a list of workers run at once)
PLAN = {
    "kill_points": (
        4,
        [
            [{"kill": {"after": "take", "nth": 1}}],  # claimed, not yet training
            [{"kill": {"after": "train_begin", "nth": 1}}],  # training
            [{"kill": {"after": "eval", "nth": 1}}],  # evaluated, label not yet written
            [{"kill": {"after": "subset_done", "nth": 1}}],  # label written, before the next subset
            [{"kill": {"mid_write": "train_begin", "nth": 1}}],  # halfway through writing a record
            [{}],
        ],
    ),
    "random_kills": (
        4,
        [*([{"max_steps": 300, "kill": {"after_s": t, "from": "train_begin"}}] for t in _RANDOM_KILLS), [{}]],
    ),
    "three_workers": (12, [[{}, {}, {}]]),
    "killed_mid_subset": (6, [[{"kill": {"after": "train_begin", "nth": 1}}, {}, {}]]),
    "torn_line": (4, [[{"kill": {"mid_write": "eval", "nth": 1}}, {}]]),
}


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    scratch = folder / "tmp"
    scratch.mkdir()
    plan = {
        "model": tiny_llama_dir,
        "n_subsets": 12,
        "scenarios": [
            {"store": str(folder / f"{name}.jsonl"), "n_subsets": n, "phases": phases}
            for name, (n, phases) in PLAN.items()
        ],
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(scratch),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(folder / "datasets"),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "INSTRUCTMINING_CPU_BF16": "0",  # float32, as in every other test
    }
    command = [sys.executable, "-m", "tests.fixtures.labeling_workers", str(folder / "plan.json"), str(folder / "r")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((folder / "r").read_text())
    return {name: scenario for name, scenario in zip(PLAN, report, strict=True)} | {"_tmp": scratch}


def _check(scenario: dict, n_subsets: int) -> dict:
    """The checks of the module docstring; returns the counts the tests look at."""
    path = scenario["store"]
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]  # every line readable
    stored = {json.dumps(r, sort_keys=True) for r in records}
    killed = {w["pid"] for phase in scenario["phases"] for w in phase if w["killed"]}
    run_pid, written = {}, 0
    for log in glob.glob(f"{path}.written.*"):
        pid = int(log.rsplit(".", 1)[1])
        for line in open(log):
            record = json.loads(line)
            assert json.dumps(record, sort_keys=True) in stored, f"lost: {record}"
            written += 1
            if record["kind"] == "train_begin":
                run_pid[record["run_id"]] = pid
    done = collections.Counter(r["subset_id"] for r in records if r["kind"] == "subset_done")
    assert len(done) == n_subsets and set(done.values()) == {1}
    finished_run = {r["subset_id"]: r["run_id"] for r in records if r["kind"] == "subset_done"}
    attempts = collections.Counter()
    labelled = set()
    for r in records:
        if r["kind"] == "subset_done":
            labelled.add(r["subset_id"])
        if r["kind"] == "train_begin":
            assert r["subset_id"] not in labelled, f"{r['subset_id']} trained again after its label was written"
            attempts[r["subset_id"]] += 1
            if r["run_id"] != finished_run[r["subset_id"]]:
                assert run_pid[r["run_id"]] in killed, f"{r['subset_id']} trained twice by live workers"
    return {"records": len(records), "written": written, "kills": len(killed), "attempts": attempts}


def test_sigkill_at_every_point_of_a_subset_loses_nothing(runs):
    scenario = runs["kill_points"]
    counts = _check(scenario, 4)
    assert [w["killed"] for phase in scenario["phases"] for w in phase] == [True] * 5 + [False]
    assert counts["records"] == counts["written"]  # the torn half-record was cut off, nothing else is missing
    # Killed after its claim, while training, after evaluating, after its label: the first subset needed three
    # attempts (the claim-only one never started training) and was never trained again once labelled.
    assert sorted(counts["attempts"].values()) == [1, 1, 1, 3]


def test_sigkill_at_random_moments_loses_nothing(runs):
    scenario = runs["random_kills"]
    counts = _check(scenario, 4)
    assert counts["kills"] == 3
    assert counts["records"] == counts["written"]


def test_three_workers_train_twelve_subsets_exactly_once(runs):
    scenario = runs["three_workers"]
    counts = _check(scenario, 12)
    assert counts["kills"] == 0 and set(counts["attempts"].values()) == {1}
    assert counts["records"] == counts["written"]
    takes = [json.loads(line) for line in open(scenario["store"]) if '"action": "take"' in line]
    assert len(takes) == 12 and len({r["pid"] for r in takes}) == 3  # every worker got a share


def test_a_worker_killed_mid_subset_leaves_it_to_the_others(runs):
    scenario = runs["killed_mid_subset"]
    counts = _check(scenario, 6)  # finished in the same run, by the two workers left
    assert counts["kills"] == 1 and sorted(counts["attempts"].values()) == [1, 1, 1, 1, 1, 2]


def test_a_torn_line_from_a_dying_writer_does_not_hurt_the_other(runs):
    scenario = runs["torn_line"]
    counts = _check(scenario, 4)
    assert counts["kills"] == 1 and counts["records"] == counts["written"]


def test_killed_runs_leave_no_temporary_folders(runs):
    # The last worker of the plan ran to the end: it removed every folder that killed workers left behind.
    assert not list(runs["_tmp"].glob("instructmining-sft-*"))
