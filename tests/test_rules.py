"""QualityRule: the built-in formulas, prediction, JSON round trip and every kind of malformed rule."""

import dataclasses
import gzip
import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from hf_instructmining import QualityRule
from hf_instructmining.errors import RuleFormatError
from hf_instructmining.indicators import get_indicator
from hf_instructmining.rules import DEFAULT_RULE, RULE_FILENAME, SCHEMA_VERSION, builtin_rules


LLAMA2_ROWS = {
    "reward": [1.5, -2.0],
    "unieval_understandability": [0.9, 0.2],
    "unieval_naturalness": [0.8, 0.3],
    "unieval_coherence": [0.7, 0.1],
}


def _valid_dict(**changes):
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": "custom",
        "target": "log_eval_loss",
        "intercept": 1.0,
        "coefficients": {"mtld": -0.01, "output_length": 0.001},
        "indicators": {"mtld": {"threshold": 0.72}, "output_length": {"tokenizer": None}},
        "provenance": {"source": "test"},
    }
    data.update(changes)
    return data


def test_builtin_names():
    # The paper's two rules, and the toy rule this project fitted offline for its demo.
    assert builtin_rules() == [
        "instructmining-llama-7b",
        "instructmining-llama2-7b",
        "instructmining-smollm2-135m",
    ]
    assert DEFAULT_RULE == "instructmining-llama2-7b"
    assert QualityRule.from_builtin().name == DEFAULT_RULE


def test_llama2_rule_reproduces_hand_computed_values():
    rule = QualityRule.from_builtin("instructmining-llama2-7b")
    # 0.0274 - 0.0078*1.5 + 0.4421*0.9 - 0.3212*0.8 - 0.1520*0.7 = 0.0274 - 0.0117 + 0.39789 - 0.25696 - 0.1064 = 0.05023
    # 0.0274 + 0.0156 + 0.08842 - 0.09636 - 0.0152 (second row)
    expected = [0.05023, 0.01986]
    np.testing.assert_allclose(rule.predict(LLAMA2_ROWS), expected, atol=1e-12)
    assert rule.provenance["paper_version"] == "v2/v3"
    assert "secondary sources that agree" in rule.provenance["note"]
    assert rule.indicators["reward"]["model"] == "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"
    assert {rule.indicators[c]["model"] for c in rule.columns if c.startswith("unieval_")} == {
        "MingZhong/unieval-dialog"
    }


def test_llama_rule_reproduces_hand_computed_values():
    rule = QualityRule.from_builtin("instructmining-llama-7b")
    assert rule.coefficients == {"reward": -0.1498, "output_length": 8.257e-5, "knn_6": -0.9350}
    # 1.0694 - 0.1498*2 + 8.257e-5*200 - 0.9350*0.4 = 1.0694 - 0.2996 + 0.016514 - 0.374
    np.testing.assert_allclose(
        rule.predict({"reward": [2.0], "output_length": [200], "knn_6": [0.4]}), [0.412314], atol=1e-12
    )
    assert rule.provenance["paper_version"] == "v1"
    assert rule.indicators["knn_6"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert rule.indicators["output_length"]["tokenizer"] == "meta-llama/Llama-2-7b-hf"


@pytest.mark.parametrize("name", ["instructmining-llama2-7b", "instructmining-llama-7b"])
def test_builtin_specs_build_their_indicators(name):
    rule = QualityRule.from_builtin(name)
    for column in rule.columns:
        indicator = get_indicator(column, **rule.indicators[column])
        assert column in indicator.columns


def test_predict_accepts_dataframe_dataset_and_scalars():
    rule = QualityRule.from_builtin()
    expected = rule.predict(LLAMA2_ROWS)
    np.testing.assert_allclose(rule.predict(pd.DataFrame(LLAMA2_ROWS)), expected)
    np.testing.assert_allclose(rule.predict(Dataset.from_dict({**LLAMA2_ROWS, "extra": ["a", "b"]})), expected)
    single = rule.predict({column: values[0] for column, values in LLAMA2_ROWS.items()})
    assert single.shape == (1,)
    assert single[0] == pytest.approx(expected[0])


def test_predict_rejects_missing_columns_naming_them():
    rule = QualityRule.from_builtin()
    with pytest.raises(KeyError, match="unieval_coherence"):
        rule.predict({c: v for c, v in LLAMA2_ROWS.items() if c != "unieval_coherence"})


def test_predict_nan_rows_raise_or_stay_nan():
    rule = QualityRule.from_builtin()
    rows = {**LLAMA2_ROWS, "reward": [1.5, math.nan]}
    with pytest.raises(ValueError, match=r"`reward` is NaN at row\(s\) \[1\]"):
        rule.predict(rows)
    prediction = rule.predict(rows, allow_nan=True)
    assert not math.isnan(prediction[0]) and math.isnan(prediction[1])
    # None (a missing value in a batch) is NaN too, never silently a number.
    assert math.isnan(rule.predict({**LLAMA2_ROWS, "reward": [1.5, None]}, allow_nan=True)[1])


def test_predict_rejects_infinite_and_non_numeric_values():
    rule = QualityRule.from_builtin()
    with pytest.raises(ValueError, match="infinite"):
        rule.predict({**LLAMA2_ROWS, "reward": [math.inf, 0.0]}, allow_nan=True)
    with pytest.raises(ValueError, match="non-numeric"):
        rule.predict({**LLAMA2_ROWS, "reward": ["high", "low"]})
    with pytest.raises(ValueError, match="different numbers of rows"):
        rule.predict({**LLAMA2_ROWS, "reward": [1.0]})


@pytest.mark.parametrize("name", ["instructmining-llama2-7b", "instructmining-llama-7b"])
def test_json_round_trip_predicts_the_same(tmp_path, name):
    rule = QualityRule.from_builtin(name)
    path = rule.save(tmp_path)
    assert path.endswith(RULE_FILENAME)
    loaded = QualityRule.load(path)
    assert loaded == rule
    assert QualityRule.from_pretrained(str(tmp_path)) == rule
    rows = {c: [0.5, 1.0, 2.0] for c in rule.columns}
    np.testing.assert_array_equal(loaded.predict(rows), rule.predict(rows))
    assert json.loads(open(path).read())["schema_version"] == 1  # no domain: readable by releases before it


def test_domain_clips_predictions_and_round_trips(tmp_path):
    rule = QualityRule.from_dict(_valid_dict(domain={"mtld": [20, 60]}))
    assert rule.domain == {"mtld": (20.0, 60.0)}
    rows = {"mtld": [10.0, 50.0, 470.0, math.nan], "output_length": [1e4, 1e4, 1e4, 1e4]}
    # mtld clipped into [20, 60]; output_length has no range, so it is not clipped; NaN stays NaN.
    expected = [1.0 - 0.2 + 10.0, 1.0 - 0.5 + 10.0, 1.0 - 0.6 + 10.0, math.nan]
    np.testing.assert_allclose(rule.predict(rows, allow_nan=True), expected)
    path = rule.save(tmp_path)
    saved = json.loads(open(path).read())
    assert saved["schema_version"] == 2 and saved["domain"] == {"mtld": [20.0, 60.0]}
    assert QualityRule.load(path) == rule


def test_save_writes_nan_statistics_as_null(tmp_path):
    rule = QualityRule.from_dict(
        _valid_dict(provenance={"fit": {"f_pvalue": math.nan, "table": {"x": [np.float64(1)]}}})
    )
    loaded = QualityRule.load(rule.save(tmp_path / "rule.json"))
    assert loaded.provenance == {"fit": {"f_pvalue": None, "table": {"x": [1.0]}}}


def _write(tmp_path, content):
    path = tmp_path / "rule.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "must be a JSON object"),
        (_valid_dict(extra=1), r"unknown field\(s\) \['extra'\]"),
        ({k: v for k, v in _valid_dict().items() if k != "schema_version"}, "missing field.*schema_version"),
        ({k: v for k, v in _valid_dict().items() if k != "indicators"}, "missing field.*indicators"),
        (_valid_dict(schema_version="1"), "`schema_version` must be a positive integer"),
        (_valid_dict(schema_version=99), "newer than this version"),
        (_valid_dict(target="eval_loss"), "`target` must be `log_eval_loss`"),
        (_valid_dict(intercept="1.0"), "`intercept` must be a number"),
        (_valid_dict(intercept=True), "`intercept` must be a number"),
        (_valid_dict(coefficients=[]), "`coefficients` must be a non-empty object"),
        (_valid_dict(coefficients={}), "`coefficients` must be a non-empty object"),
        (_valid_dict(coefficients={"mtld": None, "output_length": 1.0}), r"`coefficients.mtld` must be a number"),
        (_valid_dict(coefficients={"bogus": 1.0}, indicators={"bogus": {}}), "unknown indicator column `bogus`"),
        (_valid_dict(indicators={"mtld": {}}), r"no spec for the column\(s\) \['output_length'\]"),
        (_valid_dict(indicators={"mtld": {}, "output_length": {}, "reward": {}}), r"\['reward'\], which have no coef"),
        (_valid_dict(indicators={"mtld": "default", "output_length": {}}), "`indicators.mtld` must be an object"),
        (_valid_dict(indicators=[]), "`indicators` must be an object"),
        (_valid_dict(provenance=[]), "`provenance` must be an object"),
        (_valid_dict(name=3), "`name` must be a string or null"),
        (_valid_dict(domain=[1, 2]), "`domain` must be an object of column -> \\[low, high\\]"),
        (_valid_dict(domain={"reward": [0, 1]}), "`domain` has a range for `reward`, which has no coefficient"),
        (_valid_dict(domain={"mtld": [1, 2, 3]}), r"`domain.mtld` must be \[low, high\]"),
        (_valid_dict(domain={"mtld": [2, 1]}), r"with low <= high, got `\[2, 1\]`"),
        (_valid_dict(domain={"mtld": [0, "inf"]}), "`domain.mtld` must be a number"),
    ],
)
def test_malformed_rule_files_name_the_field(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(RuleFormatError, match=message) as info:
        QualityRule.load(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema_version": 1, "intercept": ', "not valid JSON"),
        ("", "not valid JSON"),
        (json.dumps(_valid_dict()).replace('"intercept": 1.0', '"intercept": NaN'), "`intercept` must be finite"),
        (
            json.dumps(_valid_dict()).replace('"mtld": -0.01', '"mtld": -Infinity'),
            "`coefficients.mtld` must be finite",
        ),
        (
            json.dumps(_valid_dict()).replace('"threshold": 0.72', '"threshold": Infinity'),
            r"`indicators.mtld`.threshold must be finite",
        ),
    ],
)
def test_unparsable_and_non_finite_files(tmp_path, text, message):
    with pytest.raises(RuleFormatError, match=message):
        QualityRule.load(_write(tmp_path, text))


def _valid_text(**changes) -> str:
    return json.dumps(_valid_dict(**changes))


def _nested(depth: int) -> str:
    return _valid_text(provenance={"source": "x"}).replace('{"source": "x"}', '{"a": ' * depth + "1" + "}" * depth)


# Every kind of file that is not a rule: each must raise RuleFormatError naming the file and the fault.
MALFORMED_FILES = {
    "pickle renamed .json": (lambda: pickle.dumps(_valid_dict()), "is a pickle, not JSON"),
    "pickle protocol 0": (lambda: pickle.dumps(_valid_dict(), protocol=0), "not valid JSON"),
    "gzipped JSON": (lambda: gzip.compress(_valid_text().encode()), "binary, not JSON text"),
    "UTF-16 with BOM": (lambda: _valid_text().encode("utf-16"), "UTF-16"),
    "UTF-16 BE with BOM": (lambda: b"\xfe\xff" + _valid_text().encode("utf-16-be"), "UTF-16"),
    "Latin-1 name": (lambda: _valid_text(name="caf\u00e9").replace("\\u00e9", "\u00e9").encode("latin-1"), "UTF-8"),
    "NUL byte": (lambda: _valid_text().encode().replace(b"custom", b"cus\x00tom"), "NUL bytes"),
    "empty file": (lambda: b"", "the file is empty"),
    "only whitespace": (lambda: b" \n\t\n", "the file is empty"),
    "truncated": (lambda: _valid_text()[:40].encode(), "not valid JSON"),
    "trailing garbage": (lambda: (_valid_text() + " x").encode(), "Extra data"),
    "two objects": (lambda: (_valid_text() + _valid_text()).encode(), "Extra data"),
    "comments": (lambda: ("// my rule\n" + _valid_text()).encode(), "not valid JSON"),
    "Python repr": (lambda: repr(_valid_dict()).encode(), "not valid JSON"),
    "top-level list": (lambda: b"[1, 2]", "must be a JSON object, got list"),
    "top-level string": (lambda: b'"rule"', "must be a JSON object, got str"),
    "top-level number": (lambda: b"3", "must be a JSON object, got int"),
    "top-level null": (lambda: b"null", "must be a JSON object, got NoneType"),
    "array nested 100,000 deep": (lambda: b"[" * 100_000 + b"]" * 100_000, "nests deeper than a JSON parser"),
    "object nested 3,000 deep": (lambda: _nested(3000).encode(), "nests deeper than a JSON parser"),
    "object nested 100 deep": (lambda: _nested(100).encode(), "nests more than 64 levels deep"),
    "400-digit intercept": (
        lambda: _valid_text().replace('"intercept": 1.0', '"intercept": ' + "9" * 400).encode(),
        "too large for a float",
    ),
    "5,000-digit intercept": (
        lambda: _valid_text().replace('"intercept": 1.0', '"intercept": ' + "9" * 5000).encode(),
        "5000 digits",
    ),
    "huge coefficient": (
        lambda: _valid_text().replace('"mtld": -0.01', '"mtld": -' + "1" * 320).encode(),
        "`coefficients.mtld` is an integer too large",
    ),
    "1e999": (
        lambda: _valid_text().replace('"intercept": 1.0', '"intercept": 1e999').encode(),
        "`intercept` must be finite",
    ),
    "duplicate key": (
        lambda: _valid_text().replace('"intercept": 1.0', '"intercept": 1.0, "intercept": 2.0').encode(),
        r"duplicate key\(s\) \['intercept'\]",
    ),
    "schema_version 1.5": (lambda: _valid_text(schema_version=1.5).encode(), "positive integer"),
    "schema_version 0": (lambda: _valid_text(schema_version=0).encode(), "positive integer"),
    "unknown indicator option": (
        lambda: _valid_text(indicators={"mtld": {"bogus": 1}, "output_length": {}}).encode(),
        r"do not build the `mtld` indicator, which takes no option \['bogus'\]; its options are \[.*'threshold'",
    ),
    "option out of range": (
        lambda: _valid_text(indicators={"mtld": {"threshold": 5}, "output_length": {}}).encode(),
        "`indicators.mtld`: .* do not build the `mtld` indicator: The MTLD threshold must be in",
    ),
    "option of the wrong type": (
        lambda: _valid_text(indicators={"mtld": {}, "output_length": {"tokenizer": 5}}).encode(),
        "`indicators.output_length`: .* do not build .*a string",
    ),
    "unknown indicator family member": (
        lambda: _valid_text(coefficients={"unieval_fluency": 1.0}, indicators={"unieval_fluency": {}}).encode(),
        "unknown indicator column `unieval_fluency`",
    ),
    "over 10 MB": (lambda: _valid_text(name="x" * 10_000_001).encode(), "a rule file is a small JSON object"),
}


@pytest.mark.parametrize("case", list(MALFORMED_FILES))
def test_every_malformed_rule_file_raises_rule_format_error_naming_it(tmp_path, case):
    make, message = MALFORMED_FILES[case]
    path = tmp_path / "instructmining_rule.json"
    path.write_bytes(make())
    with pytest.raises(RuleFormatError, match=message) as info:
        QualityRule.load(tmp_path)  # the folder form finds the file
    assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")


def test_a_byte_order_mark_is_harmless(tmp_path):
    path = tmp_path / "rule.json"
    path.write_bytes(b"\xef\xbb\xbf" + _valid_text().encode())
    assert QualityRule.load(path) == QualityRule.from_dict(_valid_dict())


def test_constructor_validates_like_files():
    with pytest.raises(RuleFormatError, match="must be finite"):
        QualityRule(math.inf, {"mtld": 1.0}, {"mtld": {}})
    with pytest.raises(RuleFormatError, match="no spec"):
        QualityRule(0.0, {"mtld": 1.0}, {})
    with pytest.raises(RuleFormatError, match="JSON cannot store"):
        QualityRule(0.0, {"mtld": 1.0}, {"mtld": {"threshold": object()}})


def test_knn_family_columns_are_known():
    rule = QualityRule(0.0, {"knn_3": 1.0, "unieval_coherence": 1.0}, {"knn_3": {}, "unieval_coherence": {}})
    assert rule.columns == ["knn_3", "unieval_coherence"]
    with pytest.raises(RuleFormatError, match="unknown indicator column `knn_0`"):
        QualityRule(0.0, {"knn_0": 1.0}, {"knn_0": {}})


def test_unknown_builtin_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="instructmining-llama2-7b"):
        QualityRule.from_builtin("nope")
    with pytest.raises(FileNotFoundError, match=RULE_FILENAME):
        QualityRule.from_pretrained(str(tmp_path))


def test_from_pretrained_hub_id_offline_does_not_touch_the_network(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    # huggingface_hub reads HF_HUB_OFFLINE at import time, before the autouse fixture sets it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LocalEntryNotFoundError):
        QualityRule.from_pretrained("someone/not-a-local-rule")


def test_formula_is_readable():
    assert QualityRule.from_builtin("instructmining-llama-7b").formula() == (
        "log L_eval = 1.0694 - 0.1498·reward + 8.257e-05·output_length - 0.935·knn_6"
    )


def _fitted_rows(label, values):
    rng = np.random.default_rng(0)
    rewards = rng.normal(0, 1, 20)
    return [
        {"kind": "subset_done", "subset_id": f"s{i}", label: v, "indicator_means": {"reward": float(r)}}
        for i, (r, v) in enumerate(zip(rewards, values(rewards, rng), strict=True))
    ]


def test_formula_names_the_response_a_rule_was_fitted_to(tmp_path):
    from hf_instructmining import fit_rule

    score = fit_rule(
        _fitted_rows("eval_rougeL", lambda r, rng: 1 - np.exp(-1.0 - 0.3 * r + rng.normal(0, 0.01, r.size))),
        target="eval_rougeL",
        higher_is_better=True,
    ).rule
    assert score.response == "log(1 - eval_rougeL)"
    intercept, coefficient = score.intercept, score.coefficients["reward"]
    assert intercept < 0 and coefficient < 0
    assert score.formula() == f"log(1 - eval_rougeL) = {intercept:g} - {-coefficient:g}·reward"
    assert QualityRule.load(score.save(tmp_path)).formula() == score.formula()

    losses = lambda r, rng: np.exp(0.5 + 0.2 * r + rng.normal(0, 0.01, r.size))  # noqa: E731
    other = fit_rule(_fitted_rows("train_loss", losses), target="train_loss").rule
    assert other.formula().startswith("log(train_loss) = 0.")
    # Any evaluation loss, of the eval set or of a named one, keeps the paper's `log L_eval`.
    for label in ("eval_loss", "eval_alpaca_loss"):
        rule = fit_rule(_fitted_rows(label, losses), target=label).rule
        assert rule.response == "log L_eval" and rule.formula().startswith("log L_eval = 0.")
    # A rule fitted before scores could be targets records only `log(<label>)`.
    old = QualityRule(0.5, {"reward": 0.2}, {"reward": {}}, {"fit": {"target": "log(eval_loss)"}})
    assert old.formula() == "log L_eval = 0.5 + 0.2·reward"


def test_from_pretrained_finds_the_rule_of_a_dataset_repo(fake_hub, tmp_path):
    from huggingface_hub import HfApi

    rule = QualityRule.from_builtin("instructmining-llama-7b")
    api = HfApi()
    api.create_repo("me/scored-data", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=rule.save(tmp_path), path_in_repo=RULE_FILENAME, repo_id="me/scored-data", repo_type="dataset"
    )
    assert QualityRule.from_pretrained("me/scored-data") == rule
    assert QualityRule.from_pretrained("me/scored-data", repo_type="dataset") == rule


def test_outside_domain_names_the_means_beyond_the_fitted_range():
    rule = QualityRule.from_dict(_valid_dict(domain={"mtld": [20, 60], "output_length": [10, 100]}))
    rows = {"mtld": [10.0, 50.0, 300.0, math.nan], "output_length": [5.0, 200.0, 50.0, 50.0]}
    # mtld's mean (NaN ignored) is 120, above 60; output_length's mean 76.25 lies within 10-100, though single rows do not.
    assert rule.outside_domain(rows) == {"mtld": 120.0}
    assert rule.outside_domain({"mtld": [30.0]}) == {}  # a column the rows lack gives nothing
    assert QualityRule.from_builtin("instructmining-llama-7b").outside_domain({"reward": [1e9]}) == {}


# -- out-of-range policies and indicator scales --------------------------------------------------------------------

# A rule written before `out_of_range` and `transforms` existed (version 1 of `instructmining-smollm2-135m`, rounded):
# it must score exactly as two-sided clipping always did.
VERSION_2_FILE = {
    "schema_version": 2,
    "name": "old",
    "target": "log_eval_loss",
    "intercept": 0.7557,
    "coefficients": {"output_length": -9.99e-05, "knn_6": 0.1526, "end_of_turn_logprob": -0.005313},
    "indicators": {"output_length": {}, "knn_6": {}, "end_of_turn_logprob": {}},
    "domain": {"output_length": [70.77, 327.1], "knn_6": [0.4762, 0.5954], "end_of_turn_logprob": [-4.418, -0.688]},
}


def _two_sided_clip(rule, rows):
    """The prediction as rules computed it before policies existed: intercept + Σ coefficient · clip(value)."""
    prediction = np.full(len(next(iter(rows.values()))), rule.intercept)
    for column, coefficient in rule.coefficients.items():
        low, high = (rule.domain or {}).get(column, (-np.inf, np.inf))
        prediction += coefficient * np.clip(np.asarray(rows[column], dtype=float), low, high)
    return prediction


@pytest.mark.parametrize("name", [*builtin_rules(), "version 2 file"])
def test_rules_without_a_policy_score_exactly_as_before(tmp_path, name):
    rule = QualityRule.from_dict(VERSION_2_FILE) if name == "version 2 file" else QualityRule.from_builtin(name)
    if rule.transforms or rule.out_of_range != "clip":
        pytest.skip(f"{name} records its own policy or scales")
    rng = np.random.default_rng(0)
    rows = {c: rng.normal(0, 1, 2000) * 10 ** rng.uniform(-2, 4, 2000) for c in rule.columns}
    np.testing.assert_array_equal(rule.predict(rows), _two_sided_clip(rule, rows))  # bit for bit
    assert rule.out_of_range == "clip" and rule.transforms == {}
    saved = json.loads(open(rule.save(tmp_path)).read())
    # Written as before: no new field, the same schema version, so releases before them still read it.
    assert "out_of_range" not in saved and "transforms" not in saved
    assert saved["schema_version"] == (1 if rule.domain is None else 2)


def _ranged(policy, coefficient=-0.01, **changes):
    return QualityRule(
        1.0, {"mtld": coefficient}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)}, out_of_range=policy, **changes
    )


ROWS = {"mtld": [10.0, 50.0, 470.0, math.nan]}


@pytest.mark.parametrize(
    "policy, coefficient, used, below, above",
    [
        # Negative coefficient: a higher mtld lowers the score, so the high side is the helpful one.
        ("clip", -0.01, [20.0, 50.0, 60.0], [True, False, False], [False, False, True]),
        ("clip_helpful", -0.01, [10.0, 50.0, 60.0], [False, False, False], [False, False, True]),
        ("clip_helpful_saturate", -0.01, [20.0 - 40.0 * math.log1p(10.0 / 40.0), 50.0, 60.0], [False] * 3,
         [False, False, True]),
        ("none", -0.01, [10.0, 50.0, 470.0], [False] * 3, [False] * 3),
        # Positive coefficient: a lower mtld lowers the score, so the low side is the helpful one.
        ("clip_helpful", 0.01, [20.0, 50.0, 470.0], [True, False, False], [False, False, False]),
        ("clip_helpful_saturate", 0.01, [20.0, 50.0, 60.0 + 40.0 * math.log1p(410.0 / 40.0)], [True, False, False],
         [False] * 3),
    ],
)  # fmt: skip
def test_out_of_range_policies(policy, coefficient, used, below, above):
    rule = _ranged(policy, coefficient)
    values, low_mask, high_mask = rule.used_values(ROWS)
    np.testing.assert_allclose(values["mtld"], [*used, math.nan])
    assert low_mask["mtld"].tolist() == [*below, False] and high_mask["mtld"].tolist() == [*above, False]
    np.testing.assert_allclose(rule.predict(ROWS, allow_nan=True), 1.0 + coefficient * np.array([*used, math.nan]))


def test_clip_helpful_keeps_counting_a_value_worse_than_the_domain():
    # The failure clipping hid: a run-on answer that never ends (end-of-turn log-probability -24) scored like one at
    # the domain's edge (-4.4). Clipped on the helpful side only, it keeps counting against the row.
    old = QualityRule.from_dict(VERSION_2_FILE)
    new = dataclasses.replace(old, out_of_range="clip_helpful")
    rows = {"output_length": [1038.0, 1038.0], "knn_6": [0.5, 0.5], "end_of_turn_logprob": [-4.418, -24.0]}
    assert old.predict(rows)[0] == old.predict(rows)[1]
    assert new.predict(rows)[1] - new.predict(rows)[0] == pytest.approx(0.005313 * (24.0 - 4.418))
    # ... but a value beyond the helpful edge still counts as the edge: 1,038 tokens score as 327.
    np.testing.assert_allclose(new.predict(rows)[0], old.predict(rows)[0])


@pytest.mark.parametrize(
    "name, values, expected",
    [
        ("log", [1.0, math.e, math.nan], [0.0, 1.0, math.nan]),
        ("log1p", [0.0, math.e - 1], [0.0, 1.0]),
        ("signed_log1p", [-(math.e - 1), 0.0, math.e - 1], [-1.0, 0.0, 1.0]),
        ("exp", [0.0, -24.0], [1.0, math.exp(-24.0)]),
    ],
)
def test_transforms_read_values_on_the_rules_scale(name, values, expected):
    rule = QualityRule(0.0, {"perplexity": 1.0}, {"perplexity": {}}, transforms={"perplexity": name})
    np.testing.assert_allclose(rule.predict({"perplexity": values}, allow_nan=True), expected)
    assert rule.formula() == f"log L_eval = 0 + 1·{name}(perplexity)"


def test_transform_comes_before_the_domain_and_outside_domain_compares_transformed_means():
    # The domain is on the log scale: log perplexity means 1.4-1.9 (perplexity 4-6.7).
    rule = QualityRule(
        0.0,
        {"perplexity": -1.0},
        {"perplexity": {}},
        domain={"perplexity": (1.4, 1.9)},
        transforms={"perplexity": "log"},
    )
    np.testing.assert_allclose(rule.predict({"perplexity": [1.0, 5.0, 1000.0]}), [-1.4, -math.log(5.0), -1.9])
    # The mean of the logs (1.61) lies inside the domain, though the mean of the values (5.5) is far above it.
    assert rule.outside_domain({"perplexity": [2.0, 9.0]}) == {}
    assert rule.outside_domain({"perplexity": [1.0, 1.0]}) == {"perplexity": 0.0}
    # Said on the scale it was compared on: `log(perplexity)` 0, not `perplexity` 0 (a perplexity is at least 1).
    from hf_instructmining.rules.rule import describe_outside_domain

    assert "`log(perplexity)` 0 (fitted 1.4 to 1.9)" in describe_outside_domain(rule, {"perplexity": [1.0, 1.0]})
    assert rule.term("perplexity") == "log(perplexity)" and rule.formula().endswith("1·log(perplexity)")


def test_a_value_outside_its_transform_names_the_column_and_rows():
    rule = QualityRule(0.0, {"perplexity": 1.0}, {"perplexity": {}}, transforms={"perplexity": "log"})
    with pytest.raises(ValueError, match=r"`perplexity` is read on the scale `log`.*row\(s\) \[1\] hold \[0.0\]"):
        rule.predict({"perplexity": [2.0, 0.0]})


def test_policy_and_transforms_round_trip_as_schema_3(tmp_path):
    rule = _ranged("clip_helpful_saturate", transforms={"mtld": "log1p"})
    path = rule.save(tmp_path)
    saved = json.loads(open(path).read())
    assert saved["schema_version"] == SCHEMA_VERSION == 3
    assert saved["out_of_range"] == "clip_helpful_saturate" and saved["transforms"] == {"mtld": "log1p"}
    loaded = QualityRule.load(path)
    assert loaded == rule
    np.testing.assert_array_equal(loaded.predict(ROWS, allow_nan=True), rule.predict(ROWS, allow_nan=True))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"out_of_range": "clamp"}, r"`out_of_range` must be one of \['clip', 'clip_helpful', .*got `'clamp'`"),
        ({"out_of_range": None}, "`out_of_range` must be one of"),
        ({"transforms": ["log"]}, "`transforms` must be an object of column -> transform"),
        ({"transforms": {"reward": "log"}}, "`transforms` names `reward`, which has no coefficient"),
        ({"transforms": {"mtld": "sqrt"}}, r"`transforms.mtld` must be one of \['exp', 'log', .*got `'sqrt'`"),
        ({"transforms": {"mtld": 1}}, r"`transforms.mtld` must be one of"),
    ],
)
def test_malformed_policy_or_transforms_name_the_field(tmp_path, changes, message):
    path = _write(tmp_path, _valid_dict(schema_version=3, **changes))
    with pytest.raises(RuleFormatError, match=message):
        QualityRule.load(path)
    with pytest.raises(RuleFormatError, match=message):  # the constructor checks the same
        QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, **changes)


def test_the_shipped_offline_rule_records_its_policy_scales_and_checks():
    rule = QualityRule.from_builtin("instructmining-smollm2-135m")
    assert rule.out_of_range == "clip_helpful" and rule.transforms == {"perplexity": "log"}
    assert "knn_6" not in rule.columns  # its value on new data lies outside the fitted range (RESULTS.md)
    provenance = rule.provenance
    assert provenance["version"] == 3 and provenance["noise_floor"]["signal_to_noise"] >= 3
    assert provenance["fit"]["n_subsets"] == 84 and provenance["fit"]["cv_r_squared"] > 0.5
    assert all(row["vif"] < 5 for column, row in provenance["fit"]["table"].items() if column != "intercept")
    assert provenance["checks"]["gpt4_over_phi2_held_out"]["value"] >= 0.85
    assert provenance["checks"]["example_data_styles_best_first"][0] == "careful"
    # Its domain is on its own scale: the log of perplexities 4.2-6.4.
    low, high = rule.domain["perplexity"]
    assert 1.0 < low < high < 2.0
