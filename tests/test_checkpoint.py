"""Resumable scoring (`compute_indicators(..., checkpoint_dir=)`, `instructmining score --checkpoint_dir`): shards on
disk, a rerun that computes only what is missing, and a folder of another job never reused.

The SIGKILL tests of the same machinery are in `test_fault_injection_scoring.py`.
"""

import logging
import re

import datasets
import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators
from hf_instructmining.scoring import provenance


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
RULE = QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, name="toy")
COLUMNS = ["input_length", "mtld", "output_length", "instruct_score"]


def _rows(n: int, offset: int = 0) -> Dataset:
    return Dataset.from_dict(
        {
            "instruction": [f"Question {i} about {WORDS[i % 12]}" for i in range(offset, offset + n)],
            "output": [
                " ".join(WORDS[(i * j + j) % 12] for j in range(i % 23 + 1)) for i in range(offset, offset + n)
            ],
        }
    )


def _score(ds, folder, *, rule=RULE, shard_size=40, **options):
    return compute_indicators(
        ds, ["input_length"], rule=rule, checkpoint_dir=folder, shard_size=shard_size, batch_size=20, **options
    )


def _computed(caplog) -> list[int]:
    """The shards computed (not read back) by the calls since `caplog` was cleared."""
    return [int(m.group(1)) for r in caplog.records if (m := re.match(r"Shard (\d+): computing", r.getMessage()))]


def _same(a, b, columns=COLUMNS) -> None:
    for column in columns:
        x, y = np.asarray(a[column]), np.asarray(b[column])
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), column


@pytest.fixture(autouse=True)
def _debug_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="hf_instructmining.scoring")


def test_a_checkpointed_run_equals_one_without(tmp_path, caplog):
    ds = _rows(230)
    plain = compute_indicators(ds, ["input_length"], rule=RULE, batch_size=20)
    sharded = _score(ds, tmp_path / "ckpt")
    assert _computed(caplog) == list(range(6))  # 230 rows in shards of 40
    assert sharded.column_names == plain.column_names and len(sharded) == 230
    _same(sharded, plain, ["instruction", "output", *COLUMNS])
    # Each column records how it was made, as in a run without checkpoints (for dataset cards).
    assert provenance.read(sharded).rule == RULE
    assert provenance.read(sharded).indicators == provenance.read(plain).indicators
    assert sharded.features == plain.features  # every record, the score's (rule, call, texts digest) included


def test_a_rerun_computes_only_the_missing_shards(tmp_path, caplog):
    ds = _rows(230)
    first = _score(ds, tmp_path)
    (tmp_path / "shard-000002.arrow").unlink()  # as if the job had stopped there
    (tmp_path / "score.arrow").unlink()
    caplog.clear()
    again = _score(ds, tmp_path)
    assert _computed(caplog) == [2]
    assert any("resuming, 5 of 6 shards done" in r.getMessage() for r in caplog.records)
    _same(again, first)
    caplog.clear()
    _same(_score(ds, tmp_path), first)  # a finished job reads everything back
    assert _computed(caplog) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"rule": QualityRule(1.0, {"mtld": -0.02, "output_length": 0.001}, RULE.indicators)}, "the rule"),
        ({"on_invalid": "nan"}, "the indicators or their options"),
        ({"column_mapping": {"instruction": "output", "output": "instruction"}}, "the indicators or their options"),
        ({"ds": _rows(230, offset=1)}, "the input rows"),
        ({"shard_size": 50}, "the batch or shard size"),
    ],
)
def test_another_job_never_reuses_a_shard_and_says_what_changed(tmp_path, caplog, change, named):
    _score(_rows(230), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    caplog.clear()
    change = dict(change)
    ds = change.pop("ds", _rows(230))
    fresh = _score(ds, tmp_path, **change)
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "checkpoint" in r.getMessage()
    ]
    assert len(warnings) == 1 and named in warnings[0] and "starting afresh" in warnings[0]
    assert _computed(caplog) == list(range(-(-230 // change.get("shard_size", 40))))
    options = {k: v for k, v in change.items() if k not in ("rule", "shard_size")}
    expected = compute_indicators(ds, ["input_length"], rule=change.get("rule", RULE), batch_size=20, **options)
    _same(fresh, expected)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the checkpoint's own files go


def test_shards_without_their_manifest_are_never_reused(tmp_path, caplog):
    ds = _rows(100)
    first = _score(ds, tmp_path)
    (tmp_path / "manifest.json").unlink()
    caplog.clear()
    _same(_score(ds, tmp_path), first)
    assert _computed(caplog) == [0, 1, 2]
    assert any("starting afresh" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_write_cut_short_is_never_read(tmp_path, caplog):
    ds = _rows(100)
    first = _score(ds, tmp_path)
    (tmp_path / "shard-000001.arrow").rename(tmp_path / "shard-000001.arrow.tmp")  # killed before the rename
    (tmp_path / "score.arrow").unlink()
    caplog.clear()
    _same(_score(ds, tmp_path), first)
    assert _computed(caplog) == [1]
    assert not list(tmp_path.glob("*.tmp"))


def test_knn_searches_once_every_embedding_shard_is_on_disk(tmp_path, caplog, tiny_bert_dir):
    ds = _rows(150)
    options = {"models": {"knn": tiny_bert_dir}, "device": "cpu"}
    plain = compute_indicators(ds, ["knn_6", "mtld"], batch_size=20, **options)
    sharded = compute_indicators(
        ds, ["knn_6", "mtld"], checkpoint_dir=tmp_path, shard_size=40, batch_size=20, **options
    )
    np.testing.assert_allclose(sharded["knn_6"], plain["knn_6"], rtol=1e-5)
    _same(sharded, plain, ["mtld"])
    # A stop after the last embedding shard: the search runs again from the embeddings on disk, and nothing else.
    (tmp_path / "search-knn_6.arrow").unlink()
    caplog.clear()
    again = compute_indicators(ds, ["knn_6", "mtld"], checkpoint_dir=tmp_path, shard_size=40, batch_size=20, **options)
    assert _computed(caplog) == []
    _same(again, sharded, ["knn_6", "mtld"])


def test_progress_counts_the_whole_job_from_the_resumed_rows(tmp_path, capsys):
    ds = _rows(230)
    _score(ds, tmp_path)
    for shard in (3, 4, 5):
        (tmp_path / f"shard-{shard:06d}.arrow").unlink()
    capsys.readouterr()
    datasets.enable_progress_bars()
    try:
        _score(ds, tmp_path)
    finally:
        datasets.disable_progress_bars()
    bar = capsys.readouterr().err
    # 120 rows were on disk: the bar starts there, counts to all 230, and gives a rate and the time left.
    assert re.search(r"Computing input_length, mtld, output_length:\s+52%\S*\s*\S* 120/230", bar), bar
    assert re.search(r"100%\S*\s*\S* 230/230 \[[0-9:]+<[0-9:]+, +[0-9.]+rows/s\]", bar), bar


def test_shard_size_is_checked(tmp_path):
    with pytest.raises(ValueError, match="`shard_size` must be a positive number of rows"):
        _score(_rows(10), tmp_path, shard_size=0)


@pytest.mark.parametrize("num_proc", [None, 2])
def test_a_bad_row_is_named_by_its_dataset_row_and_loses_the_shards_before_it(tmp_path, caplog, num_proc):
    rows = _rows(100).to_dict()
    rows["output"][95] = ""
    with pytest.raises(ValueError, match=r"row 95\b"):
        _score(Dataset.from_dict(rows), tmp_path, num_proc=num_proc)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-000000.arrow", "shard-000001.arrow"]


def test_worker_processes_write_the_same_shards(tmp_path):
    ds = _rows(130)
    _same(_score(ds, tmp_path / "workers", num_proc=2), _score(ds, tmp_path / "one"))


def test_the_command_line_refuses_a_file_as_checkpoint_folder(tmp_path, capsys):
    from hf_instructmining.cli import main

    _rows(10).to_json(tmp_path / "rows.jsonl")
    (tmp_path / "taken").write_text("")
    args = ["score", "--dataset", str(tmp_path / "rows.jsonl"), "--indicators", "mtld", "--output", "x.parquet"]
    assert main([*args, "--checkpoint_dir", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err
    assert "`--checkpoint_dir" in err and "is a file: name a folder" in err
    assert main([*args, "--checkpoint_dir", str(tmp_path / "ckpt"), "--shard_size", "0"]) == 1
    assert "`--shard_size` must be at least 1 row" in capsys.readouterr().err


def test_the_command_line_resumes_with_its_bar_at_the_rows_done(tmp_path, capsys):
    from hf_instructmining.cli import main

    _rows(100).to_json(tmp_path / "rows.jsonl")
    args = ["score", "--dataset", str(tmp_path / "rows.jsonl"), "--indicators", "mtld,output_length"]
    args += ["--checkpoint_dir", str(tmp_path / "ckpt"), "--shard_size", "30"]
    assert main([*args, "--output", str(tmp_path / "a.parquet")]) == 0
    (tmp_path / "ckpt" / "shard-000003.arrow").unlink()
    capsys.readouterr()
    datasets.enable_progress_bars()
    try:
        assert main([*args, "--output", str(tmp_path / "b.parquet"), "--verbose"]) == 0
    finally:
        datasets.disable_progress_bars()
    err = capsys.readouterr().err
    assert "resuming, 3 of 4 shards done" in err
    assert re.search(r"Computing mtld, output_length:\s+90%\S*\s*\S* 90/100", err), err
    assert (
        Dataset.from_parquet(str(tmp_path / "b.parquet")).to_dict()
        == Dataset.from_parquet(str(tmp_path / "a.parquet")).to_dict()
    )
