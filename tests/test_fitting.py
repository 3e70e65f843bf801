"""fit_rule: recovers known coefficients, matches statsmodels, selects indicators, rejects degenerate inputs."""

import math
import warnings

import numpy as np
import pytest

from hf_instructmining import FitResult, LabelStore, QualityRule, fit_rule


TRUE = {"intercept": 1.2, "reward": -0.15, "mtld": 0.004, "output_length": 0.0}


def _rows(n=60, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        values = {"reward": rng.normal(0, 1), "mtld": rng.uniform(20, 90), "output_length": rng.uniform(10, 300)}
        log_loss = TRUE["intercept"] + sum(TRUE[c] * v for c, v in values.items()) + rng.normal(0, noise)
        rows.append({"subset_id": f"s{i:03d}", "eval_loss": math.exp(log_loss), **values})
    return rows


def test_recovers_known_coefficients():
    result = fit_rule(_rows(), indicators=["reward", "mtld"])
    assert isinstance(result, FitResult) and isinstance(result.rule, QualityRule)
    assert result.rule.intercept == pytest.approx(TRUE["intercept"], abs=0.02)
    assert result.rule.coefficients == pytest.approx({"reward": -0.15, "mtld": 0.004}, abs=2e-3)
    assert result.r_squared > 0.99 and result.cv_r_squared > 0.98


def test_the_rule_records_the_scales_of_its_means_and_its_out_of_range_policy():
    # Means of log(mtld): the rule reads single rows' mtld on the same scale, and keeps its domain on it.
    rows = [{**r, "mtld": math.log(r["mtld"])} for r in _rows()]
    result = fit_rule(
        rows, indicators=["reward", "mtld", "output_length"], selection="bic",
        transforms={"mtld": "log", "output_length": "log1p"}, out_of_range="clip_helpful",
    )  # fmt: skip
    rule = result.rule
    assert rule.columns == ["reward", "mtld"] and rule.transforms == {"mtld": "log"}  # the selected columns' only
    assert rule.out_of_range == "clip_helpful"
    assert rule.domain["mtld"] == (min(r["mtld"] for r in rows), max(r["mtld"] for r in rows))
    mtld = math.exp(rows[0]["mtld"])
    expected = (
        rule.intercept + rule.coefficients["reward"] * rows[0]["reward"] + rule.coefficients["mtld"] * rows[0]["mtld"]
    )
    assert rule.predict({"reward": [rows[0]["reward"]], "mtld": [mtld]})[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"out_of_range": "clamp"}, r"`out_of_range` must be one of \['clip', 'clip_helpful'"),
        ({"transforms": {"mtld": "sqrt"}}, r"each transform must be one of \['exp', 'log'"),
        (
            {"transforms": {"perplexity": "log"}},
            r"`transforms` names \['perplexity'\], which are not among the candidate",
        ),
    ],
)
def test_bad_scales_or_policy_are_refused_before_fitting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_rule(_rows(), indicators=["reward", "mtld"], **kwargs)


def test_label_records_with_raw_means_are_refused_for_a_transformed_column():
    # What `run_labeling` stores: each subset's mean of the raw values, which is not the mean of their logs.
    records = [
        {"kind": "subset_done", "subset_id": f"s{i}", "eval_loss": r["eval_loss"],
         "indicator_means": {"reward": r["reward"], "mtld": r["mtld"]}}
        for i, r in enumerate(_rows())
    ]  # fmt: skip
    with pytest.raises(
        ValueError, match=r"`transforms` names \['mtld'\], whose means the label records hold on the raw"
    ):
        fit_rule(records, indicators=["reward", "mtld"], transforms={"mtld": "log"})
    assert fit_rule(records, indicators=["reward", "mtld"]).rule.transforms == {}


def test_the_rule_keeps_the_range_of_the_means_it_was_fitted_on():
    rows = _rows()
    rule = fit_rule(rows, indicators=["reward", "mtld"]).rule
    for column in ("reward", "mtld"):
        values = [r[column] for r in rows]
        assert rule.domain[column] == (min(values), max(values))
    # A single row far outside that range scores like a row at its edge: the fit says nothing beyond its data.
    edge = {"reward": [max(r["reward"] for r in rows)], "mtld": [50.0]}
    assert rule.predict({"reward": [1e6], "mtld": [50.0]}) == pytest.approx(rule.predict(edge))


def test_statistics_match_statsmodels():
    import statsmodels.api as sm
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    rows = _rows(noise=0.05)
    columns = ["reward", "mtld", "output_length"]
    result = fit_rule(rows, indicators=columns)
    X = sm.add_constant(np.array([[r[c] for c in columns] for r in rows]))
    reference = sm.OLS(np.log([r["eval_loss"] for r in rows]), X).fit()
    assert result.r_squared == pytest.approx(reference.rsquared)
    assert result.adj_r_squared == pytest.approx(reference.rsquared_adj)
    assert result.f_statistic == pytest.approx(reference.fvalue)
    assert result.f_pvalue == pytest.approx(reference.f_pvalue)
    assert (result.aic, result.bic) == pytest.approx((reference.aic, reference.bic))
    for j, name in enumerate(["intercept", *columns]):
        row = result.table[name]
        assert (row["coef"], row["std_err"], row["p_value"]) == pytest.approx(
            (reference.params[j], reference.bse[j], reference.pvalues[j])
        )
        assert row["vif"] == (None if j == 0 else pytest.approx(variance_inflation_factor(X, j)))

    fit = result.rule.provenance["fit"]
    assert {"n_subsets", "r_squared", "adj_r_squared", "f_statistic", "f_pvalue", "aic", "bic", "cv_r_squared"} <= set(
        fit
    )
    assert fit["selection"] == "all" and fit["table"]["intercept"]["vif"] is None and fit["n_subsets"] == 60
    assert {"source", "base_model", "eval_set", "library_versions", "created_at"} <= set(result.rule.provenance)
    assert "R²" in result.report() and "output_length" in result.report()


def test_cross_validated_r_squared_is_out_of_sample():
    rows = _rows(n=30, noise=0.3, seed=2)
    result = fit_rule(rows, indicators=["reward", "mtld", "output_length"], cv_folds=5, seed=0)
    assert result.cv_r_squared < result.r_squared
    assert fit_rule(rows, indicators=["reward"], cv_folds=5, seed=0).cv_r_squared == pytest.approx(
        fit_rule(rows, indicators=["reward"], cv_folds=5, seed=0).cv_r_squared
    )


@pytest.mark.parametrize("selection", ["backward", "bic"])
def test_selection_keeps_the_indicators_that_matter(selection):
    result = fit_rule(_rows(noise=0.02), selection=selection)
    assert result.candidates == ["reward", "mtld", "output_length"]
    assert result.indicators == ["reward", "mtld"] and result.rule.columns == ["reward", "mtld"]
    assert result.rule.provenance["fit"]["selection"] == selection


def test_warns_on_collinearity_and_on_few_subsets():
    rows = _rows(n=12)
    rng = np.random.default_rng(5)
    for row in rows:
        row["perplexity"] = 2 * row["reward"] + rng.normal(0, 0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_rule(rows, indicators=["reward", "perplexity"])
    messages = [str(w.message) for w in caught]
    assert any("collinearity" in m for m in messages) and any("only 12 subsets" in m for m in messages)
    assert result.table["perplexity"]["vif"] > 10 and len(result.warnings) >= 2


def test_reads_a_label_store_and_round_trips_the_rule(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    for row in _rows(n=25):
        means = {c: row[c] for c in ("reward", "mtld")}
        store.append(
            {
                "kind": "subset_done",
                "subset_id": row["subset_id"],
                "run_id": "r",
                "eval_loss": row["eval_loss"],
                "indicator_means": means,
                "indicator_specs": {"reward": {"model": "my/rm"}, "mtld": {}},
                "base_model": "tiny",
                "eval_set": {"fingerprint": "abc"},
            }
        )
    result = fit_rule(store, name="mine")
    assert result.n_subsets == 25 and result.rule.indicators == {"reward": {"model": "my/rm"}, "mtld": {}}
    assert result.rule.provenance["base_model"] == "tiny" and result.rule.provenance["eval_set"] == {
        "fingerprint": "abc"
    }
    loaded = QualityRule.load(result.rule.save(tmp_path / "rule.json"))
    assert loaded.coefficients == pytest.approx(result.rule.coefficients)
    assert fit_rule(store.records("subset_done")).rule.coefficients == pytest.approx(result.rule.coefficients)


def test_degenerate_inputs_raise_clear_errors():
    rows = _rows(n=20)
    constant = [{**r, "mtld": 50.0} for r in rows]
    with pytest.raises(ValueError, match="`mtld` is constant"):
        fit_rule(constant, indicators=["reward", "mtld"])
    with pytest.raises(ValueError, match="more subsets than parameters"):
        fit_rule(rows[:3], indicators=["reward", "mtld"])
    with pytest.raises(ValueError, match="NaN.*s002"):
        fit_rule([{**r, "eval_loss": float("nan")} if i == 2 else r for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match="positive"):
        fit_rule([{**r, "eval_loss": 0.0} for r in rows])
    with pytest.raises(ValueError, match="no indicator column"):
        fit_rule(rows, indicators=["reward", "knn_6"])
    with pytest.raises(ValueError, match="no `loss`"):
        fit_rule(rows, target="loss")
    with pytest.raises(ValueError, match="collinear"):
        fit_rule([{**r, "output_length": 3 * r["reward"] + 1} for r in rows], indicators=["reward", "output_length"])
    with pytest.raises(ValueError, match="selection"):
        fit_rule(rows, selection="lasso")
