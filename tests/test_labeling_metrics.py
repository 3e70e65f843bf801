"""`evaluate` metrics on generated answers in the labelling loop, and fitting a rule to such a score.

The metric is a local ROUGE-L module in tests/fixtures/metrics (no Hub); the model is the tiny Llama.
"""

import os

import datasets
import numpy as np
import pytest

from hf_instructmining import EvalLossCallback, LabelingConfig, LabelStore, fit_rule, run_labeling, sample_subsets
from hf_instructmining.labeling.finetune import build_sft_config
from hf_instructmining.labeling.metrics import AnswerScorer, generate_answers, load_metrics
from hf_instructmining.labeling.subsets import split_by_column


ROUGE_L = os.path.join(os.path.dirname(__file__), "fixtures", "metrics", "rouge_l")
SEA = "the sea is blue and wide"


def _rows(n, topic, answer):
    return {"instruction": [f"Tell me about the {topic} {i}." for i in range(n)], "output": [answer] * n}


def _pool():
    """Two sources: rows that answer like the eval set (sea) and rows that do not (sky); `mtld` marks sea rows."""
    sea, sky = _rows(20, "sea", SEA), _rows(20, "sky", "red yellow green")
    pool = datasets.Dataset.from_dict({k: sea[k] + sky[k] for k in sea} | {"source": ["sea"] * 20 + ["sky"] * 20})
    return pool.map(lambda r: {"mtld": float(r["source"] == "sea")})


def test_local_metric_loads_offline_and_hub_names_fail_clearly(tmp_path):
    [(name, module)] = load_metrics(ROUGE_L).items()
    assert name == "rouge_l"
    assert module.compute(predictions=["the sea is blue"], references=["the sea is wide and blue"]) == {"rougeL": 0.8}
    assert list(load_metrics({"mine": module})) == ["mine"]
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1.*local module") as info:
        load_metrics(["rouge"])
    assert "metrics/rouge" in str(info.value)
    with pytest.raises(FileNotFoundError, match="No `evaluate` module script"):
        load_metrics(str(tmp_path / "nothing"))
    # run_labeling loads metrics before any work: a Hub name fails at once, offline.
    pool = _pool()
    subsets = sample_subsets(pool, n_subsets=1, subset_size=4)
    config = LabelingConfig(model_name_or_path=str(tmp_path / "no-model"), device="cpu")
    with pytest.raises(FileNotFoundError, match="local module"):
        run_labeling(subsets, pool, config, tmp_path / "l.jsonl", indicators=["mtld"], metrics="rouge")
    assert LabelStore(tmp_path / "l.jsonl").records() == []
    with pytest.raises(ValueError, match="generation_num_samples"):
        LabelingConfig(model_name_or_path="m", generation_num_samples=0)


@pytest.mark.slow
def test_greedy_answers_do_not_depend_on_the_batch(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = ["Give three tips.", "Write a haiku about the sea and the wind.", "Hi"]
    one = generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=1)
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    assert one == batched and all(isinstance(a, str) for a in one)
    assert model.training is False  # left as it was (from_pretrained returns eval mode)


class _LossyMetric:
    """A metric that also returns keys the labelling loop reads as eval losses."""

    name = "lossy"

    def compute(self, predictions, references):
        return {"loss": 0.0, "token_loss": 0.0, "exact": 1.0}


def test_a_metric_key_read_as_a_loss_is_not_recorded(tiny_llama_dir, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rows = datasets.Dataset.from_dict({"prompt": ["Hi", "Say sea"], "completion": ["sea", "sea"]})
    scorer = AnswerScorer(load_metrics([_LossyMetric()]), rows, max_new_tokens=2, batch_size=2)
    with caplog.at_level("WARNING"):
        assert scorer.score(model, tokenizer, None) == {"eval_exact": 1.0}
    assert "would be read as an eval loss" in caplog.text


def test_labelling_on_several_devices_refuses_a_metric_its_workers_cannot_reload(tmp_path):
    pool = _pool()
    subsets = sample_subsets(pool, n_subsets=2, subset_size=4)
    config = LabelingConfig(model_name_or_path=str(tmp_path / "no-model"), devices=["cpu", "cpu"])
    with pytest.raises(ValueError, match="`lossy` .*not an `evaluate` module"):
        run_labeling(subsets, pool, config, tmp_path / "l.jsonl", indicators=["mtld"], metrics=[_LossyMetric()])
    assert LabelStore(tmp_path / "l.jsonl").records() == []
    from hf_instructmining.labeling.runner import _check_reloadable

    _check_reloadable(load_metrics(ROUGE_L))  # a module loaded from its script reloads anywhere


@pytest.mark.slow
def test_callback_scores_named_eval_sets_inside_sft_trainer(tiny_llama_dir, tmp_path):
    from trl import SFTTrainer

    def pairs(n, offset=0):
        return datasets.Dataset.from_dict(
            {"prompt": [f"Tell me about the sea {i + offset}." for i in range(n)], "completion": [SEA] * n}
        )

    store = LabelStore(tmp_path / "labels.jsonl")
    evals = {"a": pairs(3, 100), "b": pairs(2, 200)}
    callback = EvalLossCallback(store, "s", metrics=[ROUGE_L], generation_dataset=evals, max_new_tokens=4)
    config = LabelingConfig(
        model_name_or_path=tiny_llama_dir,
        max_steps=2,
        max_length=64,
        sft_overrides={"eval_strategy": "steps", "eval_steps": 1, "disable_tqdm": True},
    )
    args = build_sft_config(config, output_dir=str(tmp_path / "out"), device="cpu")
    trainer = SFTTrainer(
        model=tiny_llama_dir, args=args, train_dataset=pairs(8), eval_dataset=evals, callbacks=[callback]
    )
    trainer.train()
    metrics = trainer.evaluate()  # the last step again: scores come back without a second record
    assert {"eval_a_rougeL", "eval_b_rougeL"} <= set(metrics)
    records = store.records("eval")
    assert sorted((r["step"], r["metric"]) for r in records) == [(s, f"eval_{n}_loss") for s in (1, 2) for n in "ab"]
    for record in records:
        [(key, value)] = record["scores"].items()
        assert key == f"eval_{record['eval_name']}_rougeL" and 0.0 <= value <= 1.0
        assert record["generation"] == {
            "metrics": ["rouge_l"],
            "num_samples": len(evals[record["eval_name"]]),
            "max_new_tokens": 4,
            "do_sample": False,
        }
    with pytest.raises(ValueError, match="generation_dataset"):
        EvalLossCallback(store, "s", metrics=[ROUGE_L])


@pytest.mark.slow
def test_labelling_records_rouge_l_and_a_rule_fits_it(tiny_llama_dir, tmp_path):
    pool = _pool()
    sources = split_by_column(pool, "source")
    subsets = sample_subsets(split_by_column(pool.remove_columns("mtld"), "source"), n_subsets=4, subset_size=12)
    eval_set = datasets.Dataset.from_dict(_rows(6, "sea", SEA))
    config = LabelingConfig(
        model_name_or_path=tiny_llama_dir,
        finetuning="full",
        learning_rate=1e-2,
        max_steps=8,
        max_length=64,
        device="cpu",
        generation_num_samples=4,
        generation_max_new_tokens=8,
        sft_overrides={"disable_tqdm": True},
    )
    store = LabelStore(tmp_path / "labels.jsonl")
    run_labeling(subsets[:3], eval_set, config, store, scored_pool=sources, metrics=[ROUGE_L])
    done = run_labeling(subsets, eval_set, config, store, scored_pool=sources, metrics=[ROUGE_L])
    assert len(store.records("train_begin", include_superseded=True)) == 4  # finished subsets are not redone

    for record in done:
        assert set(record["eval_scores"]) == {"eval_rougeL"} and 0.0 <= record["eval_scores"]["eval_rougeL"] < 1.0
        assert record["generation"]["num_samples"] == 4 and record["generation"]["do_sample"] is False
        assert (
            record["metrics"][0]["name"] == "rouge_l" and record["labeling_config"]["generation_max_new_tokens"] == 8
        )
        [evaluation] = [r for r in store.records("eval") if r["subset_id"] == record["subset_id"]]
        assert evaluation["scores"] == record["eval_scores"] and evaluation["loss"] == record["eval_loss"]
    labels = store.labels()
    rouge = np.array([row["eval_rougeL"] for row in labels])
    sea_share = np.array([row["mtld"] for row in labels])
    # More training rows that answer like the eval set: greedy answers closer to the references.
    assert np.corrcoef(sea_share, rouge)[0, 1] > 0.5

    with pytest.raises(ValueError, match="higher_is_better=True"):
        fit_rule(store, target="eval_rougeL")
    with pytest.warns(UserWarning):  # 4 subsets are too few for stable coefficients
        result = fit_rule(store, target="eval_rougeL", higher_is_better=True)
    assert result.response == "log(1 - eval_rougeL)" and result.rule.provenance["fit"]["target"] == result.response
    assert result.rule.coefficients["mtld"] < 0  # more sea-like data, lower predicted error: lower is better
    assert result.rule.predict({"mtld": sea_share}) == pytest.approx(np.log1p(-rouge) - result.model.resid, abs=1e-9)


def _score_records(n=30, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(0, 1, n)
    error = np.exp(-1.0 - 0.3 * rewards + rng.normal(0, 0.01, n))  # 1 - score
    return [
        {
            "kind": "subset_done",
            "subset_id": f"s{i:02d}",
            "eval_loss": 2.0 + 0.1 * i,
            "eval_scores": {"eval_rougeL": float(1 - e)},
            "indicator_means": {"reward": float(r)},
        }
        for i, (r, e) in enumerate(zip(rewards, error, strict=True))
    ]


def test_fit_rule_on_a_score_regresses_its_log_error_rate():
    records = _score_records()
    result = fit_rule(records, target="eval_rougeL", higher_is_better=True)
    assert result.rule.coefficients["reward"] == pytest.approx(-0.3, abs=0.01)
    assert result.rule.intercept == pytest.approx(-1.0, abs=0.01)
    assert "OLS of log(1 - eval_rougeL)" in result.report()
    assert result.rule.provenance["fit"]["higher_is_better"] is True
    # A loss target keeps the default, log(target).
    assert fit_rule(records, target="eval_loss").response == "log(eval_loss)"
    # Without a direction the score is refused; a score outside [0, 1) cannot be fitted as an error rate.
    with pytest.raises(ValueError, match="say which way it goes"):
        fit_rule(records, target="eval_rougeL")
    # Flat rows (as `store.labels()` gives them) no longer say the column is a score: still refused.
    flat = [{"eval_rougeL": r["eval_scores"]["eval_rougeL"], **r["indicator_means"]} for r in records]
    with pytest.raises(ValueError, match="say which way it goes"):
        fit_rule(flat, target="eval_rougeL")
    records[3]["eval_scores"]["eval_rougeL"] = 1.0
    with pytest.raises(ValueError, match=r"must be in \[0, 1\).*s03"):
        fit_rule(records, target="eval_rougeL", higher_is_better=True)


def test_cli_fit_on_a_score(tmp_path, capsys):
    from hf_instructmining import QualityRule
    from hf_instructmining.cli import main

    store = LabelStore(tmp_path / "labels.jsonl")
    for record in _score_records():
        store.append({**record, "run_id": "r"})
    out = str(tmp_path / "rule.json")
    assert main(["fit", "--store", store.path, "--target", "eval_rougeL", "--output", out]) == 1
    assert "higher_is_better" in capsys.readouterr().err
    argv = ["fit", "--store", store.path, "--target", "eval_rougeL", "--higher_is_better", "true", "--output", out]
    assert main(argv) == 0
    assert "OLS of log(1 - eval_rougeL)" in capsys.readouterr().out
    assert QualityRule.load(out).provenance["fit"]["target"] == "log(1 - eval_rougeL)"
