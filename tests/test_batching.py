"""Token-budget batching: results in input order, and a progress bar that moves per batch during model passes."""

import time

import datasets
import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators
from hf_instructmining.indicators._batching import run_in_batches, token_budget_batches


@pytest.fixture
def progress_bars():
    datasets.enable_progress_bars()
    yield
    datasets.disable_progress_bars()


def slow_score(batch: list[int]) -> list[float]:
    time.sleep(0.15)  # longer than tqdm's refresh interval, so that every batch shows
    return [float(i) for i in batch]


def test_values_come_back_in_input_order():
    assert token_budget_batches([3, 10, 4, 9], max_tokens=20) == [[1, 3], [2, 0]]
    assert run_in_batches([3, 10, 4, 9], 20, lambda batch: [10.0 * i for i in batch]) == [0.0, 10.0, 20.0, 30.0]


def test_progress_moves_per_batch_and_counts_the_rows(progress_bars, capsys):
    run_in_batches([10] * 6, max_tokens=20, score=slow_score, desc="Perplexity")
    err = capsys.readouterr().err
    assert "Perplexity" in err and "tokens/s" in err
    assert "2/6 rows" in err and "4/6 rows" in err and "6/6 rows" in err  # one step per batch of 2 rows


def test_progress_weighs_each_batch_by_its_padded_tokens(progress_bars, capsys):
    # Longest rows first: one row of 30 tokens costs what three rows of 10 do. Counted in rows, the bar would
    # read 25% after half the work, and its first time left would be three times too long.
    run_in_batches([30, 10, 10, 10], max_tokens=30, score=slow_score)
    err = capsys.readouterr().err
    assert "30/60" in err and "1/4 rows" in err and "60/60" in err and "4/4 rows" in err


def test_progress_is_silenced_like_every_datasets_bar(capsys):
    run_in_batches([10] * 6, max_tokens=20, score=slow_score)  # the test session disables bars
    assert capsys.readouterr().err == ""


def test_a_model_indicator_inside_map_shows_its_model_pass(progress_bars, capsys, tiny_llama_dir):
    ds = Dataset.from_dict({"instruction": ["Say hi"] * 8, "output": ["Hello there, my good friend."] * 8})
    # A small token budget, as long rows make on a CPU: several model batches within one `map` batch.
    spec = {"model": tiny_llama_dir, "max_tokens": 32}
    compute_indicators(ds, rule=QualityRule(0.0, {"perplexity": 0.01}, {"perplexity": spec}), device="cpu")
    err = capsys.readouterr().err
    assert "Computing perplexity" in err and "perplexity: model pass" in err  # the pass under the `map` batch


def test_the_default_token_budget_follows_the_device_and_the_dtype():
    from hf_instructmining.indicators import Perplexity
    from hf_instructmining.indicators._model_base import CPU_BF16_MAX_TOKENS, CPU_MAX_TOKENS, GPU_MAX_TOKENS

    assert Perplexity("m", dtype="float32").token_budget("cpu") == CPU_MAX_TOKENS == 1024
    assert Perplexity("m", dtype="bfloat16").token_budget("cpu") == CPU_BF16_MAX_TOKENS == 4096
    assert Perplexity("m", dtype="bfloat16").token_budget("cuda:0") == GPU_MAX_TOKENS
    assert Perplexity("m", dtype="bfloat16", max_tokens=64).token_budget("cpu") == 64
