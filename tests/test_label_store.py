"""LabelStore: append-only JSONL that survives killed writers and hides interrupted attempts."""

import json
import os
import shutil
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


def test_a_complete_last_record_without_its_newline_is_kept_and_the_newline_added(tmp_path):
    path = tmp_path / "labels.jsonl"
    # A store edited by hand, or copied by a tool that drops the final newline: the last record is whole.
    path.write_bytes(b'{"kind": "subset_done", "subset_id": "a"}\n{"kind": "subset_done", "subset_id": "b"}')
    store = LabelStore(path)
    assert store.finished_subsets() == {"a", "b"}
    assert path.read_bytes().endswith(b'"b"}\n')
    store.append({"kind": "subset_done", "subset_id": "c"})
    assert [json.loads(line)["subset_id"] for line in _lines(path) if line] == ["a", "b", "c"]


# Records of the wrong shape: valid JSON, written by hand or by a tool that got the format wrong.
WRONG_SHAPES = {
    "no subset_id": {"kind": "subset_done"},
    "a list as subset_id": {"kind": "subset_done", "subset_id": ["b"]},
    "a number as kind": {"kind": 7, "subset_id": "b"},
    "a list of eval losses": {"kind": "subset_done", "subset_id": "b", "eval_losses": [1.0]},
    "a list as run_id": {"kind": "eval", "subset_id": "a", "run_id": ["r"], "loss": 1.0},
    "a string timestamp in a claim": {
        "kind": "claim",
        "subset_id": "b",
        "action": "take",
        "claim_id": "x",
        "lease_s": 1.0,
        "host": "other-node",
        "timestamp": "yesterday",
    },
    "a claim without timestamp": {"kind": "claim", "subset_id": "b", "action": "take", "claim_id": "x"},
    "a string lease": {"kind": "claim", "subset_id": "b", "action": "take", "claim_id": "x", "lease_s": "long"},
    "a non-finite timestamp": {"kind": "eval", "subset_id": "a", "timestamp": float("nan")},
}


@pytest.mark.parametrize("bad", list(WRONG_SHAPES.values()), ids=list(WRONG_SHAPES))
def test_a_record_of_the_wrong_shape_is_skipped_with_one_warning_naming_its_line(tmp_path, caplog, bad):
    from hf_instructmining.labeling.claims import claim_next, free_subsets

    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    store.append({"kind": "subset_done", "subset_id": "a", "eval_loss": 1.0})
    with open(path, "a") as f:
        f.write(json.dumps(bad) + "\n")
    store.append({"kind": "subset_done", "subset_id": "c", "eval_loss": 2.0})
    for reader in (store, LabelStore(path)):
        assert reader.finished_subsets() == {"a", "c"} and len(reader) == 2
        assert [row["subset_id"] for row in reader.labels()] == ["a", "c"]
        assert [r["subset_id"] for r in reader.records()] == ["a", "c"]
    assert free_subsets(store, ["a", "b", "c"]) == (["b"], [])
    claim, busy = claim_next(store, ["a", "b", "c"])
    assert claim.subset_id == "b" and busy == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warnings if "line 2" in w]) == 2  # once per store object, however often it reads
    assert all(str(path) in w for w in warnings)


def test_a_record_of_the_wrong_shape_is_refused_on_write(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    with pytest.raises(ValueError, match="subset_id"):
        store.append({"kind": "subset_done", "subset_id": ["a"]})
    with pytest.raises(ValueError, match="eval_losses"):
        store.append({"kind": "subset_done", "subset_id": "a", "eval_losses": [1.0]})
    assert len(store) == 0


def test_an_explicitly_read_only_store_never_writes(tmp_path):
    path = tmp_path / "labels.jsonl"
    content = b'{"kind": "subset_done", "subset_id": "a"}\n{"kind": "subset_done", "subset_id": "b"}\n{"kind": "ev'
    path.write_bytes(content)
    store = LabelStore(path, readonly=True)
    assert store.finished_subsets() == {"a", "b"}  # the torn tail is skipped, not cut
    with pytest.raises(PermissionError, match="read-only"):
        store.append({"kind": "subset_done", "subset_id": "c"})
    assert path.read_bytes() == content
    assert LabelStore(tmp_path / "missing" / "labels.jsonl", readonly=True).records() == []
    assert not (tmp_path / "missing").exists()


READER = """
import sys
from hf_instructmining.labeling.store import LabelStore
store = LabelStore(sys.argv[1])
print(sorted(store.finished_subsets()), [row["eval_loss"] for row in store.labels()])
try:
    store.append({"kind": "subset_done", "subset_id": "z"})
except PermissionError as error:
    print("refused:", error)
"""


def _read_only_fixture(folder):
    path = os.path.join(folder, "labels.jsonl")
    with open(path, "wb") as f:  # a torn last line too: nobody may cut it, the readers skip it
        f.write(b'{"kind": "subset_done", "subset_id": "a", "eval_loss": 1.5}\n{"kind": "subset_done", "sub')
    return path


def _check_read_only_reader(out, path):
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert lines[0] == "['a'] [1.5]"
    assert lines[1].startswith("refused:") and path in lines[1] and "read-only" in lines[1]


def test_a_store_on_a_read_only_mount_opens_for_reading(tmp_path):
    # A real read-only bind mount in a private mount namespace: writes fail with EROFS, even for root.
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user and mount namespaces here (`unshare -rm` fails)")
    folder = str(tmp_path / "ro")
    os.mkdir(folder)
    path = _read_only_fixture(folder)
    before = open(path, "rb").read()
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3" "$1/labels.jsonl"'
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", folder, sys.executable, READER],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
    )
    _check_read_only_reader(out, path)
    assert open(path, "rb").read() == before


def test_a_read_only_file_in_a_read_only_folder_opens_for_reading(tmp_path):
    # Root writes through file modes: as root the reader runs without the capabilities that let it
    # (`setpriv` drops CAP_DAC_OVERRIDE from the bounding set), so the modes hold for it as for any user.
    command = [sys.executable, "-c", READER]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without `setpriv` to drop the capability that overrides file modes")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _read_only_fixture(str(folder))
    before = open(path, "rb").read()
    os.chmod(path, 0o444)
    os.chmod(folder, 0o555)
    try:
        out = subprocess.run(
            [*command, path], env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True
        )
    finally:
        os.chmod(folder, 0o755)
    _check_read_only_reader(out, path)
    assert open(path, "rb").read() == before
