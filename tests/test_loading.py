"""Shared machinery of the model-based indicators: loading once, devices, dtypes, fingerprints, map caching."""

import json
import logging
import math

import pytest
import torch
from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher

from hf_instructmining.indicators import KNNDistance, Perplexity, RewardScore, UniEval
from hf_instructmining.loading import default_dtype, load_model, resolve_device, resolve_dtype


ROWS = {
    "instruction": ["Give three tips for staying healthy.", "Translate good morning into French.", "Count to three."],
    "input": ["", "", ""],
    "output": ["Eat well, sleep well and exercise.", "Bonjour.", "1 2 3"],
}
LAYOUTS = {
    "alpaca": ROWS,
    "prompt_completion": {"prompt": ROWS["instruction"], "completion": ROWS["output"]},
    "messages": {
        "messages": [
            [{"role": "user", "content": i}, {"role": "assistant", "content": o}]
            for i, o in zip(ROWS["instruction"], ROWS["output"], strict=True)
        ]
    },
}


def _indicators(request):
    """One indicator of each family on its tiny model (KNN with a reference set, as `map` needs)."""
    fixture = request.getfixturevalue
    return {
        "reward": RewardScore(fixture("tiny_oa_reward_dir")),
        "perplexity": Perplexity(fixture("tiny_llama_dir")),
        "unieval": UniEval(fixture("tiny_t5_dir")),
        "knn": KNNDistance(k=1, model=fixture("tiny_bert_dir"), reference=Dataset.from_dict(ROWS)),
    }


def _assert_close(got: dict, expected: dict, rel: float = 1e-4, abs: float = 1e-6):
    assert got.keys() == expected.keys()
    for column in expected:
        assert got[column] == pytest.approx(expected[column], rel=rel, abs=abs), column


@pytest.fixture(params=["reward", "perplexity", "unieval", "knn"])
def indicator(request):
    return _indicators(request)[request.param]


def test_resolve_device_and_dtype():
    assert resolve_device("cpu", rank=2) == "cpu"
    assert resolve_device(None) == ("cuda" if torch.cuda.device_count() else "cpu")
    assert default_dtype("cpu") == "float32"  # the tests keep native CPU bf16 off (conftest)
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        resolve_dtype("float13", "cpu")


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="checks the error raised without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda", rank=0)


def test_models_load_once_per_process(tiny_llama_dir):
    assert load_model(tiny_llama_dir, "causal_lm") is load_model(tiny_llama_dir, "causal_lm")
    first, second = Perplexity(tiny_llama_dir), Perplexity(tiny_llama_dir, template="plain")
    first(ROWS)
    second(ROWS)
    assert first._model is second._model


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="Could not load"):
        Perplexity(str(tmp_path / "nowhere"))(ROWS)


def test_model_must_be_a_name():
    with pytest.raises(TypeError, match="Hub id or a local path"):
        Perplexity(model=torch.nn.Linear(2, 2))


def test_fingerprint_is_stable_after_loading(indicator):
    before = Hasher.hash(indicator)
    indicator(ROWS)
    assert indicator._model is not None
    assert Hasher.hash(indicator) == before


def test_map_batched_and_single_agree_and_cache(indicator, tmp_path):
    Dataset.from_dict(ROWS).save_to_disk(tmp_path / "ds")
    ds = load_from_disk(str(tmp_path / "ds"))
    batched = ds.map(indicator, batched=True, batch_size=2)
    again = ds.map(indicator, batched=True, batch_size=2)
    assert batched.cache_files == again.cache_files
    single = ds.map(indicator)
    for column in indicator.columns:
        assert all(math.isfinite(v) for v in batched[column])
        assert batched[column] == pytest.approx(single[column], rel=1e-4, abs=1e-5)


def test_metadata_records_the_options(indicator):
    assert indicator.metadata()["model"] == indicator.model


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_the_same_values(indicator, layout):
    values = indicator(LAYOUTS[layout])
    _assert_close(values, indicator(LAYOUTS["alpaca"]))
    assert all(len(v) == 3 and all(math.isfinite(x) for x in v) for v in values.values())


def test_invalid_rows_become_nan_not_shifted(indicator):
    rows = {k: [*v, v[0]] for k, v in ROWS.items()}
    rows["output"][1] = ""
    indicator.on_invalid = "nan"
    values = indicator(rows)
    full = indicator(ROWS)
    for column in indicator.columns:
        assert math.isnan(values[column][1])
        assert values[column][0] == pytest.approx(full[column][0], rel=1e-4)
        assert values[column][2] == pytest.approx(full[column][2], rel=1e-4)


def test_overlong_texts_are_truncated_with_a_warning(indicator, caplog):
    indicator.max_length = 8
    long = {k: [v[0] * 20] if k != "input" else [""] for k, v in ROWS.items()}
    with caplog.at_level(logging.WARNING):
        values = indicator(long)
    assert all(math.isfinite(v[0]) for v in values.values())
    assert "truncated" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(request):
    for name, cpu in _indicators(request).items():
        gpu = _indicators(request)[name]
        gpu.device, gpu.dtype = "cuda", "float32"
        _assert_close(gpu(ROWS), cpu(ROWS), rel=1e-3, abs=1e-4)


def test_csv_answers_that_are_numbers_are_read_as_text(tmp_path):
    from hf_instructmining import compute_indicators
    from hf_instructmining.loading import load_rows

    path = tmp_path / "arithmetic.csv"
    path.write_text("instruction,output,answer,instruct_score\nWhat is 2+2?,4,4,0.5\nHalf of 7?,3.5,3.5,0.25\n")
    ds = load_rows(path)
    assert ds["output"] == ["4", "3.5"]
    assert ds["instruct_score"] == [0.5, 0.25]  # columns outside the layout keep their type
    assert ds["answer"] == [4.0, 3.5]
    assert load_rows(path, text_columns=["answer"])["answer"] == ["4", "3.5"]  # e.g. the columns a mapping names
    assert compute_indicators(ds, ["output_length"])["output_length"] == [1.0, 1.0]


def test_a_split_that_a_file_or_a_saved_dataset_does_not_have_is_refused(tmp_path):
    from hf_instructmining.loading import load_rows

    path = tmp_path / "rows.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(ValueError, match=r"`.*rows.jsonl` \(`dataset`\) is one file, which has no `test` split"):
        load_rows(path, split="test")
    Dataset.from_dict({"instruction": ["a"], "output": ["b"]}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="holds one dataset, not a `test` split"):
        load_rows(tmp_path / "saved", split="test")
    assert len(load_rows(tmp_path / "saved")) == 1


def test_json_files_load_whatever_their_layout(tmp_path):
    from hf_instructmining.loading import load_rows

    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    (tmp_path / "list.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in rows).encode())
    for name in ("list.json", "lines.json", "bom.jsonl"):
        assert load_rows(tmp_path / name)["output"] == ["b", "d"], name
