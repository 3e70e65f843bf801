"""Ray: score_with_ray equals compute_indicators row for row, survives a killed actor, labels and searches as tasks.

Everything runs on a local `ray.init(num_cpus=2)` with the tiny models of `tests/fixtures/models.py`.
"""

import logging
import math
import os
import sys

import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators, score_with_ray
from hf_instructmining.formats import InstructionPairs
from hf_instructmining.indicators import Indicator


ray = pytest.importorskip("ray")


TEXT_RULE = QualityRule(
    1.0,
    {"mtld": -0.01, "output_length": 0.001, "input_length": 0.002},
    {"mtld": {}, "output_length": {}, "input_length": {}},
    name="text-rule",
)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import cloudpickle

    # The workers unpickle this module's test indicators by value: they cannot import `tests.test_ray`.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _examples(n: int) -> Dataset:
    return Dataset.from_dict(
        {
            "instruction": [f"Question number {i} about the {['sea', 'sky', 'hills'][i % 3]}" for i in range(n)],
            "input": ["" if i % 4 else "briefly" for i in range(n)],
            "output": [
                " ".join(["wave", "wind", "salt"][: 1 + i % 3] * (1 + i % 5)) + f" number {i}" for i in range(n)
            ],
        }
    )


def _assert_same(got: Dataset, expected: Dataset, columns) -> None:
    assert got.column_names == expected.column_names and len(got) == len(expected)
    for column in got.column_names:
        if column in columns:
            np.testing.assert_allclose(got[column][:], expected[column][:], rtol=1e-5, atol=1e-6, err_msg=column)
        else:
            assert got[column][:] == expected[column][:], column


def test_text_rule_same_as_one_process_from_dataset_and_parquet(tmp_path):
    ds = _examples(37)
    expected = compute_indicators(ds, rule=TEXT_RULE)
    got = score_with_ray(ds, TEXT_RULE, num_workers=2, batch_size=5)
    _assert_same(got, expected, [*TEXT_RULE.columns, "instruct_score"])
    assert got["instruct_score"][:] == expected["instruct_score"][:]  # text indicators: exactly equal

    # parquet in (two files, several row groups each) and out: row ids give the input order back
    ds.select(range(20)).to_parquet(tmp_path / "in" / "a.parquet", batch_size=6)
    ds.select(range(20, 37)).to_parquet(tmp_path / "in" / "b.parquet", batch_size=6)
    written = score_with_ray(tmp_path / "in", TEXT_RULE, num_workers=2, output_path=tmp_path / "out")
    out = Dataset.from_parquet(str(tmp_path / "out" / "*.parquet")).sort("row_id")
    assert out["row_id"][:] == list(range(37)) and written == str(tmp_path / "out")
    assert out["instruct_score"][:] == expected["instruct_score"][:]


def test_chat_rows_keep_their_nested_columns():
    messages = [
        [{"role": "user", "content": f"Tell me about number {i}"}, {"role": "assistant", "content": "It is " * i}]
        for i in range(1, 8)
    ]
    ds = Dataset.from_dict({"messages": messages})
    got = score_with_ray(ds, TEXT_RULE, num_workers=2, batch_size=3)
    expected = compute_indicators(ds, rule=TEXT_RULE)
    assert got.features == expected.features and got.to_dict() == expected.to_dict()


def test_names_and_invalid_rows(tmp_path):
    ds = Dataset.from_dict({"instruction": ["Say hi", "Count", "Empty"], "output": ["Hello there", "one two", ""]})
    got = score_with_ray(ds, ["output_length", "mtld"], on_invalid="nan", batch_size=2, keep_row_id=True)
    assert got["row_id"][:] == [0, 1, 2] and got["output_length"][:2] == [2.0, 2.0]
    assert math.isnan(got["output_length"][2]) and math.isnan(got["mtld"][2])
    with pytest.raises(ValueError, match="row_id"):
        score_with_ray(got, ["mtld"])
    with pytest.raises(TypeError, match="rule"):
        score_with_ray(ds, [3])
    with pytest.raises(ValueError, match="batch_size"):
        score_with_ray(ds, ["mtld"], batch_size=0)


@pytest.fixture(scope="module")
def tiny_v1_models(tiny_oa_reward_dir, tiny_tokenizer_dir, tiny_bert_dir):
    return {"reward": tiny_oa_reward_dir, "output_length": tiny_tokenizer_dir, "knn": tiny_bert_dir}


@pytest.mark.slow
def test_model_rule_with_whole_dataset_knn_same_as_one_process(tiny_v1_models):
    ds = _examples(30)
    with pytest.warns(UserWarning, match="not calibrated"):
        expected = compute_indicators(ds, rule="instructmining-llama-7b", models=tiny_v1_models, device="cpu")
    with pytest.warns(UserWarning, match="not calibrated"):
        got = score_with_ray(ds, "instructmining-llama-7b", models=tiny_v1_models, num_workers=2, batch_size=4)
    _assert_same(got, expected, ["reward", "output_length", "knn_6", "instruct_score"])
    assert not any(math.isnan(v) for v in got["knn_6"][:])


class CrashOnce(Indicator):
    """Words in the response; the first call in any process kills that process if `marker` does not exist yet."""

    name = "words"

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def compute(self, pairs: InstructionPairs, rank=None):
        if not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)  # a worker dying mid-run: no exception, no cleanup
        return {self.name: [float(len(r.split())) for r in pairs.responses]}


def test_killed_actor_is_retried_without_losing_or_duplicating_rows(tmp_path):
    ds = _examples(40)
    marker = str(tmp_path / "crashed")
    got = score_with_ray(ds, [CrashOnce(marker), "output_length"], num_workers=2, batch_size=4, keep_row_id=True)
    assert os.path.exists(marker)  # an actor did die
    assert got["row_id"][:] == list(range(40))
    assert got["words"][:] == [float(len(r.split())) for r in ds["output"][:]]
    assert got["words"][:] == got["output_length"][:]


def _alpaca(n, offset=0):
    return Dataset.from_dict(
        {
            "instruction": [f"Write {i + offset} words about the sea." for i in range(n)],
            "input": ["" if i % 2 else "calmly" for i in range(n)],
            "output": ["The sea is blue and wide. " * (1 + i % 3) for i in range(n)],
        }
    )


def _labeling_config(model_dir, max_steps):
    from hf_instructmining import LabelingConfig

    settings = {"per_device_train_batch_size": 2, "max_length": 64, "device": "cpu"}
    return LabelingConfig(
        model_name_or_path=model_dir, max_steps=max_steps, sft_overrides={"disable_tqdm": True}, **settings
    )


def _kill_first_label_task(store, timeout_s: float = 120.0) -> int:
    """Wait until a finetuning task has started (its `train_begin` record), then SIGKILL its worker process."""
    import signal
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.records("train_begin", include_superseded=True):
            for process in psutil.process_iter(["cmdline"]):
                if any("_label_task" in part for part in process.info["cmdline"] or []):
                    os.kill(process.pid, signal.SIGKILL)
                    return process.pid
        time.sleep(0.05)
    raise TimeoutError("No labelling task started.")


@pytest.mark.slow
def test_labeling_as_ray_tasks_survives_a_killed_worker_and_resumes(tiny_llama_dir, tmp_path):
    import threading

    from hf_instructmining import LabelStore, run_labeling, run_labeling_with_ray, sample_subsets

    pool = _alpaca(40).map(lambda r, i: {"mtld": float(i)}, with_indices=True)
    subsets = sample_subsets(pool.remove_columns(["mtld"]), n_subsets=3, subset_size=6, seed=1)
    store = LabelStore(tmp_path / "labels.jsonl")
    # Long enough that a labelling task is still running when the killer looks for one, even on a loaded machine.
    config = _labeling_config(tiny_llama_dir, max_steps=200)
    killed = []
    killer = threading.Thread(target=lambda: killed.append(_kill_first_label_task(store)), daemon=True)
    killer.start()
    done = run_labeling_with_ray(subsets, _alpaca(4, 100), config, store, scored_pool=pool, num_cpus=1)
    killer.join()
    assert killed  # a worker died mid-finetuning and Ray ran its subset again
    assert [r["subset_id"] for r in done] == [s.subset_id for s in subsets]
    assert len(store.records("subset_done", include_superseded=True)) == 3  # no subset labelled twice
    # Two tasks run at once, so the SIGKILL lands on a task either mid-finetuning (its `train_begin` is already
    # written: 4 records) or still loading its model (3 records); either way Ray retried it and nothing doubled.
    attempts = len(store.records("train_begin", include_superseded=True))
    assert attempts in (3, 4)
    assert all(
        r["indicator_means"]["mtld"] == np.mean(pool.select(s.dataset["row_index"])["mtld"])
        for r, s in zip(done, subsets, strict=True)
    )

    # The single-process runner sees the same store as finished and trains nothing more.
    again = run_labeling(subsets, _alpaca(4, 100), config, store, scored_pool=pool)
    assert again == done and len(store.records("train_begin", include_superseded=True)) == attempts


class _MostRunning:
    """Counts, every 20 ms, the Ray workers running a task of the function `name`; keeps the largest count seen."""

    def __init__(self, name: str):
        import threading

        self.name, self.most = name, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        import psutil

        while not self._stop.wait(0.02):
            running = 0
            for process in psutil.process_iter(["cmdline"]):
                running += any(f"ray::{self.name}" in part for part in process.info["cmdline"] or [])
            self.most = max(self.most, running)


@pytest.mark.slow
def test_search_trials_as_ray_tasks_share_the_single_process_search(tiny_llama_dir, tmp_path, caplog):
    from hf_instructmining import LabelStore, search_subset_size, search_subset_size_with_ray

    scored = _alpaca(30).map(lambda r, i: {"instruct_score": float(i)}, with_indices=True)
    config = _labeling_config(tiny_llama_dir, max_steps=2)
    store = LabelStore(tmp_path / "search.jsonl")
    options = {"low": 4, "high": 30, "eval_dataset": _alpaca(4, 100), "labeling_config": config, "store": store}
    with _MostRunning("_trial_task") as trials:
        result = search_subset_size_with_ray(scored, num_samples=6, **options)
    assert trials.most == 2  # a 2-CPU Ray runs two trials at once by default (6 trials allow two)
    assert len(result.trace) == 6 and all(t["loss"] > 0 for t in result.trace)
    assert {r["subset_id"] for r in store.records("eval")} == {
        f"{result.search_id}/rule/k={t['k']}" for t in result.trace
    }
    # At most a third of the trials run at once by default: 2 trials, one at a time (all answered from the store).
    with caplog.at_level(logging.INFO, logger="hf_instructmining.scale.ray_labeling"):
        search_subset_size_with_ray(scored, num_samples=2, **options)
    assert "up to 1 trials at once" in caplog.text
    # The single-process search of the same data and settings resumes these trials and adds one more.
    local = search_subset_size(scored, num_samples=7, **options)
    assert local.search_id == result.search_id and local.trace[:6] == result.trace and len(local.trace) == 7
