"""Fault injection: `instructmining score --checkpoint_dir` killed with SIGKILL at random moments and inside a shard
write, then resumed.

One harness process (`tests/fixtures/scoring_workers.py`) imports the library once and forks every run of the
command, so the plan below (a reference run, one kill inside a shard write, ten or more kills at random moments and
the runs that finish) takes seconds. The job: 600 rows of a JSON Lines file, three text indicators, a rule over two
of them and `knn_6` on a tiny BERT (embeddings per shard, one search at the end), in shards of 30 rows. Checked:

- nothing finished is lost: a shard file, once written, is never written again (its inode never changes), and no
  shard is computed after it was written;
- only the shard in flight is recomputed: each killed run leaves at most one shard computed but not written, and
  the shards computed more than once are exactly those;
- every job's output equals the reference run's, byte for byte in its values.
"""

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_instructmining import QualityRule


ROOT = Path(__file__).resolve().parents[1]
ROWS, SHARD_SIZE = 600, 30
WORDS = "sea wind salt wave tide shore storm boat sail gull reef foam current harbour".split()


@pytest.fixture(scope="module")
def report(tiny_bert_dir, tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the harness forks and reads /proc/self/fd")
    folder = tmp_path_factory.mktemp("scoring-faults")
    with open(folder / "rows.jsonl", "w") as f:
        for i in range(ROWS):
            words = [WORDS[(i * 7 + j * j) % len(WORDS)] for j in range(3 + i % 29)]
            f.write(
                json.dumps({"instruction": f"Describe the {WORDS[i % 14]} ({i}).", "output": " ".join(words)}) + "\n"
            )
    QualityRule(1.0, {"mtld": -0.01, "output_length": 0.002}, {"mtld": {}, "output_length": {}}, name="toy").save(
        folder / "rule.json"
    )
    command = [
        "--dataset", str(folder / "rows.jsonl"),
        "--rule", str(folder / "rule.json"),
        "--indicators", "compression_ratio,knn_6",
        "--models", json.dumps({"knn": tiny_bert_dir}),
        "--device", "cpu",
        "--shard_size", str(SHARD_SIZE),
    ]  # fmt: skip
    plan = {
        "dataset": str(folder / "rows.jsonl"),
        "folder": str(folder),
        "command": command,
        "in_write_shard": 3,  # the third shard written: shard 2
        "random_kills": 10,
        "kill_window": 0.5,  # kill within the first half of a whole job's time: most runs are killed mid-job
        "seed": 29,
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(folder / "datasets"),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    harness = [sys.executable, "-m", "tests.fixtures.scoring_workers", str(folder / "plan.json"), str(folder / "r")]
    done = subprocess.run(harness, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((folder / "r").read_text())
    result["folder"] = folder
    result["events"] = (folder / "events.log").read_text().splitlines()
    return result


def _events(report) -> dict[int, list[tuple[str, int]]]:
    """pid -> [("computing" | "written", shard), ...] in order."""
    by_pid = collections.defaultdict(list)
    for line in report["events"]:
        match = re.fullmatch(r"(\d+) [0-9.]+ Shard (\d+): (computing|written).*", line)
        if match:
            by_pid[int(match[1])].append((match[3], int(match[2])))
    return by_pid


def test_kills_land_at_random_moments_and_inside_a_shard_write(report):
    runs = report["runs"]
    kinds = collections.Counter(r["kind"] for r in runs if r["killed"])
    assert kinds["in_write"] == 1 and kinds["random"] >= 10
    assert kinds["reference"] == 0 and all(r["exit"] == 0 for r in runs if r["kind"] == "final")
    # The write was cut between its fsync and its rename: the temporary file is there, the shard is not.
    in_write = next(r for r in runs if r["kind"] == "in_write")
    assert in_write["tmp"] == ["shard-000002.arrow.tmp"] and "shard-000002.arrow" not in in_write["shards"]
    # The next run removed it, and no run leaves one behind when it ends.
    assert all(not r["tmp"] for r in runs if not r["killed"])
    # Random kills fell while shards were being computed (not only before the first or after the last).
    computing = _events(report)
    in_flight = [r for r in runs if r["killed"] and computing[r["pid"]] and computing[r["pid"]][-1][0] == "computing"]
    assert len(in_flight) >= 3


def test_no_finished_shard_is_lost_or_computed_again(report):
    events = _events(report)
    n_shards = -(-ROWS // SHARD_SIZE)
    for round_ in sorted({r["round"] for r in report["runs"]}):
        runs = [r for r in report["runs"] if r["round"] == round_]
        first_inode: dict[str, int] = {}
        written: set[int] = set()
        computed = collections.Counter()
        expected_again = 0
        for run in runs:
            for name, inode in run["shards"].items():
                assert first_inode.setdefault(name, inode) == inode, f"{name} was written again in round {round_}"
            # A run computes one shard at a time: each one it started, it wrote, but the last when it was killed.
            started = [shard for what, shard in events[run["pid"]] if what == "computing"]
            ended = [shard for what, shard in events[run["pid"]] if what == "written"]
            assert ended == started[: len(ended)] and len(started) - len(ended) <= int(run["killed"])
            for what, shard in events[run["pid"]]:
                if what == "computing":
                    assert shard not in written, f"shard {shard} computed again after it was written"
                    computed[shard] += 1
                else:
                    written.add(shard)
            last = events[run["pid"]][-1] if events[run["pid"]] else None
            if run["killed"] and last and last[0] == "computing":
                # The shard in flight: recomputed by the next run unless its file was already in place.
                expected_again += f"shard-{last[1]:06d}.arrow" not in run["shards"]
        finished = any(not r["killed"] for r in runs)
        if finished:
            assert set(first_inode) == {f"shard-{i:06d}.arrow" for i in range(n_shards)}
            assert sum(computed.values()) - n_shards == expected_again


def test_every_resumed_job_equals_an_uninterrupted_run(report):
    import pyarrow.parquet as pq

    folder = report["folder"]
    reference = pq.read_table(folder / "round-0.parquet")
    assert reference.num_rows == ROWS
    assert {"compression_ratio", "knn_6", "mtld", "output_length", "instruct_score"} <= set(reference.column_names)
    finished = sorted({r["round"] for r in report["runs"] if r["round"] > 0 and not r["killed"]})
    assert finished
    for round_ in finished:
        table = pq.read_table(folder / f"round-{round_}.parquet")
        assert table.column_names == reference.column_names
        for column in reference.column_names:
            assert table[column].equals(reference[column]), f"round {round_}: `{column}` differs"
