"""LabelStore: append-only JSONL that survives killed writers and hides interrupted attempts."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hf_instructmining import LabelStore


WRITER = """
import sys
from hf_instructmining.labeling.store import LabelStore
store = LabelStore(sys.argv[1])
i = 0
while True:
    store.append({"kind": "eval", "subset_id": f"s{i % 7}", "run_id": "r", "step": i, "payload": "x" * 5000})
    i += 1
"""


def _lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def test_append_and_read_back(tmp_path):
    store = LabelStore(tmp_path / "sub" / "labels.jsonl")
    written = store.append({"kind": "eval", "subset_id": "a", "loss": float("nan"), "config": {"r": {1, 2}}})
    assert written["loss"] is None and written["config"] == {"r": [1, 2]} and "timestamp" in written
    store.append({"kind": "subset_done", "subset_id": "a", "eval_loss": 1.5})
    again = LabelStore(store.path)
    assert [r["kind"] for r in again.records()] == ["eval", "subset_done"]
    assert again.is_finished("a") and not again.is_finished("b")
    with pytest.raises(ValueError, match="kind"):
        store.append({"subset_id": "a"})


def test_torn_last_line_is_cut_on_open_and_later_appends_stay_clean(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    store.append({"kind": "eval", "subset_id": "a", "step": 1})
    with open(path, "ab") as f:
        f.write(b'{"kind": "eval", "subset_id": "a", "st')  # a writer killed mid-line
    assert len(LabelStore(path).records()) == 1  # readers skip the fragment
    LabelStore(path).append({"kind": "eval", "subset_id": "a", "step": 2})
    assert [json.loads(line)["step"] for line in _lines(path) if line] == [1, 2]


def test_a_torn_line_from_another_writer_never_swallows_the_next_record(tmp_path):
    path = tmp_path / "labels.jsonl"
    writer, reader = LabelStore(path), LabelStore(path)  # both opened before the fragment appears
    writer.append({"kind": "eval", "subset_id": "a", "step": 1})
    with open(path, "ab") as f:
        f.write(b'{"kind": "eval", "subset_id": "b", "st')  # another writer died mid-line
    assert [r["step"] for r in reader.records()] == [1]
    writer.append({"kind": "eval", "subset_id": "a", "step": 2})
    for store in (writer, reader, LabelStore(path)):
        assert [r["step"] for r in store.records()] == [1, 2]
    assert [json.loads(line)["step"] for line in _lines(path) if line] == [1, 2]


def test_a_short_write_is_taken_back(tmp_path, monkeypatch):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append({"kind": "eval", "subset_id": "a", "step": 1})
    write = os.write
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", lambda fd, data: write(fd, data[:10]))  # the disk filled up mid-line
        with pytest.raises(OSError, match="Short write"):
            store.append({"kind": "eval", "subset_id": "a", "step": 2})
    assert _lines(store.path)[-1] == b""  # the partial line is gone at once
    store.append({"kind": "eval", "subset_id": "a", "step": 3})
    assert [r["step"] for r in store.records()] == [1, 3]


def test_without_fcntl_the_store_locks_per_process_and_says_so(tmp_path, monkeypatch, caplog):
    import hf_instructmining.labeling.store as module

    monkeypatch.setattr(module, "fcntl", None)  # as on Windows
    monkeypatch.setattr(module, "_warned_process_lock_only", False)
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append({"kind": "eval", "subset_id": "a", "step": 1})
    assert [r["step"] for r in store.records()] == [1]
    assert caplog.text.count("no `fcntl` file locks") == 1


def test_killed_writer_never_corrupts_the_store(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path], env=env)
    try:
        deadline = time.time() + 60
        while (not os.path.exists(path) or os.path.getsize(path) < 200_000) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    store = LabelStore(path)
    before = store.records(include_superseded=True)
    assert len(before) > 10
    assert [r["step"] for r in before] == list(range(len(before)))
    store.append({"kind": "subset_done", "subset_id": "s0", "run_id": "r"})
    lines = _lines(path)
    assert lines[-1] == b""  # the file ends on a newline
    assert [json.loads(line)["kind"] for line in lines[:-1]] == ["eval"] * len(before) + ["subset_done"]


def test_concurrent_writers_interleave_whole_lines(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path], env=env) for _ in range(2)]
    time.sleep(3)
    for writer in writers:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    records = LabelStore(path).records(include_superseded=True)
    assert all(r["payload"] == "x" * 5000 for r in records)


def test_interrupted_attempts_are_hidden_and_finished_subsets_kept_once(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append({"kind": "train_begin", "subset_id": "a", "run_id": "old"})
    store.append({"kind": "eval", "subset_id": "a", "run_id": "old", "step": 5, "loss": 9.0})  # then killed
    store.append({"kind": "train_begin", "subset_id": "a", "run_id": "new"})
    assert store.records("eval") == []  # the interrupted attempt no longer shows
    store.append({"kind": "eval", "subset_id": "a", "run_id": "new", "step": 5, "loss": 2.0})
    store.append({"kind": "subset_done", "subset_id": "a", "run_id": "new", "eval_loss": 2.0})
    store.append({"kind": "eval", "subset_id": "b", "run_id": "b1", "step": 5, "loss": 3.0})
    assert [(r["subset_id"], r["loss"]) for r in store.records("eval")] == [("a", 2.0), ("b", 3.0)]
    assert len(store.records(include_superseded=True)) == 6
    assert store.finished_subsets() == {"a"}
    assert store.labels() == [{"subset_id": "a", "eval_loss": 2.0, "num_train_rows": None}]


def test_tables(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.append({"kind": "subset_done", "subset_id": "a", "run_id": "1", "eval_loss": 2.0, "composition": {"x": 3}})
    store.append({"kind": "eval", "subset_id": "a", "run_id": "1", "loss": 2.0, "step": 3})
    frame = store.to_pandas()
    assert list(frame["kind"]) == ["subset_done", "eval"] and frame.loc[0, "composition"] == {"x": 3}
    ds = store.to_dataset("subset_done")
    assert len(ds) == 1 and json.loads(ds[0]["composition"]) == {"x": 3}
    assert store.to_dataset("eval")["step"] == [3]
