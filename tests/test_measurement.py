"""The InstructMining `evaluate` measurement, loaded offline by local path."""

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import (
    QualityRule,
    compute_indicators,
    load_indicator_measurement,
    load_measurement,
    summarize_dataset,
)


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


def test_measurement_of_a_rule_fitted_to_a_score_names_what_it_predicts(tmp_path):
    rule = QualityRule(-1.0, {"mtld": -0.01}, {"mtld": {}}, {"fit": {"target": "log(1 - eval_rougeL)"}})
    result = load_measurement(rule=rule, cache_dir=str(tmp_path)).compute(
        instructions=INSTRUCTIONS, responses=RESPONSES
    )
    assert result["response"] == "log(1 - eval_rougeL)"


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
        [
            "predicted_log_eval_loss",
            "predicted_eval_loss",
            "response",
            "num_rows",
            "num_invalid",
            *(f"mean_{c}" for c in columns),
        ]
    )
    assert result["response"] == "log L_eval"
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


# -- one measurement per indicator family ---------------------------------------------------------------------------

# family -> (indicator options with a model fixture's name in place of the path, the columns compute_indicators needs)
MODEL_FAMILIES = {
    "lengths": ({"tokenizer": "tiny_tokenizer_dir"}, ["input_length", "output_length"]),
    "reward": ({"model": "tiny_oa_reward_dir"}, ["reward"]),
    "perplexity": ({"model": "tiny_llama_dir"}, ["perplexity"]),
    "unieval": ({"model": "tiny_t5_dir"}, ["unieval_naturalness", "unieval_coherence", "unieval_understandability"]),
    "knn": ({"model": "tiny_bert_dir", "k": 2}, ["knn_2"]),
}


def _means_of(columns, **compute_options):
    """The family's means straight from `compute_indicators`: rows with a NaN in any column count in no mean."""
    scored = compute_indicators(
        Dataset.from_dict({"instruction": INSTRUCTIONS, "output": RESPONSES}),
        columns,
        on_invalid="nan",
        **compute_options,
    )
    values = {c: np.asarray(scored[c], dtype=float) for c in columns}
    valid = ~np.any([np.isnan(v) for v in values.values()], axis=0)
    return {f"mean_{c}": float(v[valid].mean()) for c, v in values.items()}, int((~valid).sum())


@pytest.mark.parametrize(
    ("family", "options", "columns"),
    [("lengths", {}, ["input_length", "output_length"]), ("mtld", {"threshold": 0.6}, ["mtld"])],
)
def test_text_indicator_measurements_equal_compute_indicators_means(tmp_path, family, options, columns):
    measurement = load_indicator_measurement(family, options, cache_dir=str(tmp_path))
    assert measurement.name == "instruct_mining_indicators" and measurement.config_name == family
    result = measurement.compute(instructions=INSTRUCTIONS, responses=RESPONSES)
    if family == "mtld":
        from hf_instructmining.indicators import MTLD

        expected = np.nanmean(
            MTLD(threshold=0.6, on_invalid="nan")({"instruction": INSTRUCTIONS, "output": RESPONSES})["mtld"]
        )
        assert result["mean_mtld"] == pytest.approx(expected)
        assert result["mean_mtld"] != pytest.approx(_means_of(columns)[0]["mean_mtld"])  # the threshold was used
    else:
        means, invalid = _means_of(columns)
        assert result == pytest.approx({"num_rows": 4, "num_invalid": invalid, **means})
        assert invalid == 1 and result["mean_output_length"] == pytest.approx((4 + 3 + 7) / 3)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_model_indicator_measurements_equal_compute_indicators_means(tmp_path, request, family):
    fixture_options, columns = MODEL_FAMILIES[family]
    options = {k: request.getfixturevalue(v) if k in ("model", "tokenizer") else v for k, v in fixture_options.items()}
    path = options.get("model", options.get("tokenizer"))
    measurement = load_indicator_measurement(family, options, device="cpu", cache_dir=str(tmp_path))
    result = measurement.compute(instructions=INSTRUCTIONS, responses=RESPONSES)

    means, invalid = _means_of(columns, models=dict.fromkeys(columns, path), device="cpu")
    assert sorted(result) == sorted(["num_rows", "num_invalid", *means])
    assert result["num_rows"] == 4 and result["num_invalid"] == invalid
    assert {k: result[k] for k in means} == pytest.approx(means, rel=1e-5)


def test_indicator_measurement_through_evaluate_load_and_its_errors(tmp_path):
    import os

    import evaluate

    import hf_instructmining.measurements as measurements

    folder = os.path.join(os.path.dirname(measurements.__file__), "instructmining_indicators")
    direct = evaluate.load(folder, config_name="mtld", cache_dir=str(tmp_path))
    helper = load_indicator_measurement("mtld", cache_dir=str(tmp_path))
    inputs = {"instructions": INSTRUCTIONS[:3], "responses": RESPONSES[:3]}
    assert direct.compute(**inputs) == helper.compute(**inputs)
    with pytest.raises(ValueError, match=r"Pick an indicator family.*'lengths', 'mtld'"):
        evaluate.load(folder, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"Unknown indicator family `length`; the families are \['lengths'"):
        load_indicator_measurement("length")
    with pytest.raises(ValueError, match="do not build the `mtld` indicator"):
        load_indicator_measurement("mtld", {"model": "x"}, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        load_indicator_measurement("knn", {"k": 0})


def test_indicator_families_cover_every_built_in_indicator():
    from hf_instructmining import indicators
    from hf_instructmining.measurements._measure import INDICATOR_FAMILIES

    built = {
        family: {type(indicators.get_indicator(c.format(k=6))) for c in columns}
        for family, columns in INDICATOR_FAMILIES.items()
    }
    for family, classes in built.items():
        assert {cls.__module__ for cls in classes} == {f"hf_instructmining.indicators.{family}"}
    names = {"InputLength", "OutputLength", "MTLD", "RewardScore", "Perplexity", "UniEval", "KNNDistance"}
    assert {cls.__name__ for classes in built.values() for cls in classes} == names


@pytest.mark.parametrize("name", ["instructmining", "instructmining_indicators"])
def test_module_examples_run(name):
    # evaluate doctests every module's `Examples:`; these modules sit outside the package's importable tree.
    import doctest
    import importlib.util
    import os

    import hf_instructmining.measurements as measurements

    path = os.path.join(os.path.dirname(measurements.__file__), name, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"measurement_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 3 and results.failed == 0
