"""The InstructMining `evaluate` measurement, loaded offline by local path."""

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators, load_measurement, summarize_dataset


RULE = QualityRule(0.5, {"mtld": -0.01, "output_length": 0.002}, {"mtld": {}, "output_length": {}}, name="text-rule")
INSTRUCTIONS = ["Say hi", "Count to three", "Name a colour", "Empty"]
RESPONSES = ["Hello there, my friend.", "one two three", "Blue, like the sea and the sky.", ""]


def test_measurement_matches_the_dataset_summary(tmp_path):
    measurement = load_measurement(rule=RULE, cache_dir=str(tmp_path))
    assert measurement.name == "instruct_mining"
    result = measurement.compute(instructions=INSTRUCTIONS, responses=RESPONSES)
    scored = compute_indicators(
        Dataset.from_dict({"instruction": INSTRUCTIONS, "output": RESPONSES}), rule=RULE, on_invalid="nan"
    )
    summary = summarize_dataset(scored, rule=RULE)
    assert result["num_rows"] == 4 and result["num_invalid"] == 1
    assert result["mean_mtld"] == pytest.approx(summary.means["mtld"])
    assert result["mean_output_length"] == pytest.approx((4 + 3 + 7) / 3)
    assert result["predicted_log_eval_loss"] == pytest.approx(summary.predicted_log_eval_loss)
    assert result["predicted_eval_loss"] == pytest.approx(math.exp(result["predicted_log_eval_loss"]))


def test_measurement_accumulates_batches(tmp_path):
    measurement = load_measurement(rule=RULE, cache_dir=str(tmp_path))
    whole = measurement.compute(instructions=INSTRUCTIONS[:3], responses=RESPONSES[:3])
    measurement.add_batch(instructions=INSTRUCTIONS[:2], responses=RESPONSES[:2])
    measurement.add_batch(instructions=INSTRUCTIONS[2:3], responses=RESPONSES[2:3])
    assert measurement.compute() == pytest.approx(whole)


def test_measurement_rule_by_name_and_invalid_policy(tmp_path, tiny_tokenizer_dir):
    folder = tmp_path / "rule"
    folder.mkdir()
    RULE.save(folder)
    strict = load_measurement(rule=str(folder), on_invalid="raise", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="row 3"):
        strict.compute(instructions=INSTRUCTIONS, responses=RESPONSES)
    with pytest.warns(UserWarning, match="not calibrated"):
        tokenized = load_measurement(rule=RULE, models={"output_length": tiny_tokenizer_dir}, cache_dir=str(tmp_path))
    result = tokenized.compute(instructions=INSTRUCTIONS[:3], responses=RESPONSES[:3])
    assert result["num_invalid"] == 0 and result["mean_output_length"] > 0


def test_default_measurement_uses_the_default_rule(tmp_path):
    measurement = load_measurement(cache_dir=str(tmp_path))
    assert measurement.rule.name == "instructmining-llama2-7b"
    assert "predicted log eval loss" in measurement.description or "log evaluation loss" in measurement.description


def test_default_rule_with_tiny_models(tmp_path, tiny_oa_reward_dir, tiny_t5_dir):
    with pytest.warns(UserWarning, match="not calibrated"):
        measurement = load_measurement(
            models={"reward": tiny_oa_reward_dir, "unieval": tiny_t5_dir}, device="cpu", cache_dir=str(tmp_path)
        )
    result = measurement.compute(instructions=INSTRUCTIONS, responses=RESPONSES)
    columns = ["reward", "unieval_understandability", "unieval_naturalness", "unieval_coherence"]
    assert sorted(result) == sorted(
        ["predicted_log_eval_loss", "predicted_eval_loss", "num_rows", "num_invalid", *(f"mean_{c}" for c in columns)]
    )
    means = [result[f"mean_{c}"] for c in columns]
    assert result["predicted_log_eval_loss"] == pytest.approx(
        0.0274 - 0.0078 * means[0] + 0.4421 * means[1] - 0.3212 * means[2] - 0.1520 * means[3]
    )
    assert result["num_invalid"] == 1


def test_measurement_equals_compute_indicators_and_the_rule_on_the_means(tmp_path):
    # Independent of the summary code: indicators per row, NaN rows dropped, means, then the rule.
    scored = compute_indicators(
        Dataset.from_dict({"instruction": INSTRUCTIONS, "output": RESPONSES}), rule=RULE, on_invalid="nan"
    )
    values = {c: np.asarray(scored[c], dtype=float) for c in RULE.columns}
    valid = ~np.any([np.isnan(v) for v in values.values()], axis=0)
    means = {c: float(v[valid].mean()) for c, v in values.items()}
    result = load_measurement(rule=RULE, cache_dir=str(tmp_path)).compute(
        instructions=INSTRUCTIONS, responses=RESPONSES
    )
    assert {c: result[f"mean_{c}"] for c in RULE.columns} == pytest.approx(means)
    assert result["predicted_log_eval_loss"] == pytest.approx(RULE.predict({c: [m] for c, m in means.items()})[0])
    assert result["num_invalid"] == int((~valid).sum())
