"""Fit a quality rule: OLS of log eval loss on the subsets' mean indicators (paper Section 3.2, Eq. 1).

The paper regresses `log L_eval` of 129 finetuned models on the mean indicator values of their training data
and keeps indicators by in-sample p-values. `fit_rule` runs the same ordinary least squares with statsmodels
and reports everything needed to judge a fit: coefficients, standard errors, p-values, R², adjusted R², the
F-test, AIC/BIC, the variance inflation factor (VIF) of each indicator and a k-fold cross-validated R² (the
out-of-sample check the paper lacks). Indicators are chosen by `selection`: `"all"`, `"backward"` (drop the
least significant one until every p-value is at most `alpha`) or `"bic"` (the subset with the lowest BIC).

The response is always an error-like quantity on a log scale, so that a fitted rule keeps the paper's reading,
"lower is better", and ranks and selects data the same way whatever it was fitted to: `log(target)` for a loss,
and `log(1 - target)` for a score in [0, 1] where higher is better (ROUGE, exact match, accuracy of generated
answers; `higher_is_better=True`). `1 - score` is the score's error rate, defined at a score of 0, where `-log(score)`
would not be.
"""

import dataclasses
import datetime
import itertools
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .import_utils import require
from .indicators.registry import indicator_columns
from .labeling.store import LabelStore, library_versions
from .rules.scales import OUT_OF_RANGE, TRANSFORMS


logger = logging.getLogger(__name__)

SELECTIONS = ("all", "backward", "bic")
VIF_WARNING = 10.0
SUBSETS_PER_INDICATOR = 10
_MAX_BEST_SUBSET = 15


@dataclass
class FitResult:
    """A fitted rule and the statistics of its regression.

    Args:
        rule ([`~hf_instructmining.QualityRule`]): the fitted rule; `rule.provenance["fit"]` holds the statistics.
        target (`str`): the regressed label; the response is `log(target)`, or `log(1 - target)` when
            `higher_is_better`.
        selection (`str`): how indicators were chosen.
        candidates (`list[str]`): the indicators considered.
        n_subsets (`int`): the rows (labelled subsets) the fit used.
        r_squared, adj_r_squared, f_statistic, f_pvalue, aic, bic (`float`): statsmodels' statistics.
        cv_r_squared (`float` or `None`): k-fold cross-validated R² (`None` when too few subsets for k folds).
        table (`dict[str, dict]`): `"intercept"` and each indicator -> `coef`, `std_err`, `p_value`, `vif`.
        warnings (`list[str]`): what to be careful about (collinearity, too few subsets).
        model (`statsmodels` results): the full regression results, for anything else.
        higher_is_better (`bool`): whether the target is a score (fitted as `log(1 - target)`) rather than a loss.
    """

    rule: Any
    target: str
    selection: str
    candidates: list[str]
    n_subsets: int
    r_squared: float
    adj_r_squared: float
    f_statistic: float
    f_pvalue: float
    aic: float
    bic: float
    cv_r_squared: float | None
    cv_folds: int
    table: dict[str, dict[str, float | None]]
    warnings: list[str] = field(default_factory=list)
    model: Any = field(default=None, repr=False)
    higher_is_better: bool = False

    @property
    def response(self) -> str:
        """What the rule predicts: `log(<target>)`, or `log(1 - <target>)` for a score; lower is better."""
        return f"log(1 - {self.target})" if self.higher_is_better else f"log({self.target})"

    @property
    def indicators(self) -> list[str]:
        """The selected indicators, in the rule's order."""
        return [name for name in self.table if name != "intercept"]

    def to_dict(self) -> dict[str, Any]:
        """The statistics as stored in `rule.provenance["fit"]`."""
        return {
            "n_subsets": self.n_subsets,
            "r_squared": self.r_squared,
            "adj_r_squared": self.adj_r_squared,
            "f_statistic": self.f_statistic,
            "f_pvalue": self.f_pvalue,
            "aic": self.aic,
            "bic": self.bic,
            "cv_r_squared": self.cv_r_squared,
            "cv_folds": self.cv_folds,
            "selection": self.selection,
            "target": self.response,
            "label": self.target,
            "higher_is_better": self.higher_is_better,
            "candidates": self.candidates,
            "table": self.table,
            "warnings": self.warnings,
        }

    def report(self) -> str:
        """A readable summary: the formula, the fit statistics and the coefficient table."""
        cv = "n/a" if self.cv_r_squared is None else f"{self.cv_r_squared:.4f}"
        lines = [
            f"InstructMining rule fit: OLS of {self.response} on {len(self.indicators)} mean indicator(s)",
            f"  subsets: {self.n_subsets}   selection: {self.selection}   candidates: {', '.join(self.candidates)}",
            f"  R²: {self.r_squared:.4f}   adj. R²: {self.adj_r_squared:.4f}   CV R² ({self.cv_folds}-fold): {cv}",
            f"  F: {_fmt(self.f_statistic)} (p = {_fmt(self.f_pvalue)})   AIC: {self.aic:.3f}   BIC: {self.bic:.3f}",
            "",
            f"  {'term':<28}{'coef':>12}{'std err':>12}{'p-value':>12}{'VIF':>10}",
        ]
        for name, row in self.table.items():
            vif = "" if row["vif"] is None else _fmt(row["vif"])
            lines.append(
                f"  {name:<28}{_fmt(row['coef']):>12}{_fmt(row['std_err']):>12}{_fmt(row['p_value']):>12}{vif:>10}"
            )
        lines += ["", f"  {self.rule.formula()}"]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def fit_rule(
    records,
    target: str = "eval_loss",
    indicators: Sequence[str] | None = None,
    selection: str = "all",
    *,
    higher_is_better: bool | None = None,
    alpha: float = 0.05,
    cv_folds: int = 5,
    seed: int = 0,
    indicator_specs: Mapping[str, Mapping[str, Any]] | None = None,
    name: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    transforms: Mapping[str, str] | None = None,
    out_of_range: str = "clip",
) -> FitResult:
    """Fit `log(target) ≈ β0 + Σ βi · mean indicator i` by OLS and return the rule with its statistics.

    For a score where higher is better (`higher_is_better=True`), the response is `log(1 - target)` instead, so the
    rule still predicts an error-like quantity where lower is better and selects data like a loss-fitted rule.

    Args:
        records ([`LabelStore`], `list[dict]`, `pandas.DataFrame` or `datasets.Dataset`): one row per labelled
            subset with the target and the mean indicators (a store gives `store.labels()`; `"subset_done"`
            records work too).
        target (`str`, *optional*, defaults to `"eval_loss"`): the label column: a loss (must be positive), any
            named eval loss, or a generated-answer score such as `"eval_rougeL"` (see `higher_is_better`).
        indicators (`list[str]`, *optional*): the candidate indicators; defaults to every known indicator column
            present in the records.
        selection (`str`, *optional*, defaults to `"all"`): `"all"`, `"backward"` (p-value backward elimination)
            or `"bic"` (best subset by BIC, up to 15 candidates).
        higher_is_better (`bool`, *optional*): `True` fits `log(1 - target)` for a score in [0, 1] where higher
            is better (ROUGE, exact match); `False` fits `log(target)` (losses, or error rates such as WER). When not
            given: `False` for a loss (a target whose name ends in `loss`); any other target must say which way it
            goes (fitting `log(rougeL)` as if it were a loss would make the rule select the worst data).
        alpha (`float`, *optional*, defaults to `0.05`): the p-value threshold of `"backward"`.
        cv_folds (`int`, *optional*, defaults to `5`): folds of the cross-validated R².
        seed (`int`, *optional*, defaults to `0`): shuffles the cross-validation folds.
        indicator_specs (`dict[str, dict]`, *optional*): options that rebuild each indicator; taken from the records
            when they carry them, else `{}` (the defaults).
        name (`str`, *optional*): the rule's name.
        provenance (`dict`, *optional*): more provenance (`base_model`, `eval_set`, ...), merged over what the
            records say.
        transforms (`dict[str, str]`, *optional*): indicator column -> the scale the records' means were taken on
            (e.g. `{"output_length": "log1p"}`: each subset's mean of `log1p(output_length)`). The rule records it,
            so that `predict` reads single rows on the same scale (see [`~hf_instructmining.QualityRule`]). Label
            records (a store's `indicator_means`) hold means of raw values, so they are refused for a transformed
            column: compute its per-subset means from the rows' scores instead.
        out_of_range (`str`, *optional*, defaults to `"clip"`): the rule's policy for values outside its domain:
            `"clip"`, `"clip_helpful"`, `"clip_helpful_saturate"` or `"none"`.

    Returns:
        [`FitResult`]: `.rule` is a [`~hf_instructmining.QualityRule`] whose `domain` is the range of each selected
        indicator's mean over the subsets (its `predict` clips single rows into it); `.report()` prints the fit.

    Raises:
        `ValueError`: a missing column, a non-positive or NaN label (outside [0, 1) with `higher_is_better`), a
            generated-answer score without `higher_is_better`, a NaN or constant indicator, perfectly collinear
            indicators, or no more subsets than parameters.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_instructmining import fit_rule
    >>> rng = np.random.default_rng(0)
    >>> rows = [{"reward": r, "mtld": m, "eval_loss": float(np.exp(1.0 - 0.2 * r + 0.01 * m + rng.normal(0, 0.01)))}
    ...         for r, m in zip(rng.normal(0, 1, 40), rng.uniform(20, 80, 40))]
    >>> result = fit_rule(rows)
    >>> round(result.rule.coefficients["reward"], 1), round(result.rule.coefficients["mtld"], 2)
    (-0.2, 0.01)
    ```
    """
    require("statsmodels", "fit_rule")
    if selection not in SELECTIONS:
        raise ValueError(f"`selection` must be one of {list(SELECTIONS)}, got `{selection!r}`.")
    if cv_folds < 2:
        raise ValueError(f"`cv_folds` must be at least 2, got {cv_folds}.")
    if out_of_range not in OUT_OF_RANGE:
        raise ValueError(f"`out_of_range` must be one of {list(OUT_OF_RANGE)}, got `{out_of_range!r}`.")
    unknown = {c: t for c, t in (transforms or {}).items() if not isinstance(t, str) or t not in TRANSFORMS}
    if unknown:
        raise ValueError(f"`transforms` {unknown}: each transform must be one of {sorted(TRANSFORMS)}.")
    rows, meta = _rows(records)
    raw = sorted({c for r in meta for c in r.get("indicator_means") or {}} & set(transforms or {}))
    if raw:
        # `run_labeling` stores each subset's mean of the raw values, and log(mean) is not mean(log): a rule fitted
        # on those means but reading rows on another scale would rank by a formula that was never fitted.
        raise ValueError(
            f"`transforms` names {raw}, whose means the label records hold on the raw scale (as `run_labeling` "
            "stores them): pass one row per subset with the mean of the transformed values instead, or no `transforms`."
        )
    columns = list(dict.fromkeys(c for row in rows for c in row))
    if target not in columns:
        raise ValueError(f"The records have no `{target}` column; columns: {columns}. Pass `target=`.")
    if isinstance(indicators, str):
        indicators = [indicators]
    candidates = list(indicators) if indicators is not None else indicator_columns(columns)
    if not candidates:
        raise ValueError(f"No indicator columns to regress on among {columns}; pass `indicators=[...]`.")
    missing = [c for c in candidates if c not in columns]
    if missing:
        raise ValueError(f"The records have no indicator column(s) {missing}; columns: {columns}.")
    stray = [c for c in transforms or {} if c not in candidates]
    if stray:
        raise ValueError(f"`transforms` names {stray}, which are not among the candidate indicators {candidates}.")
    ids = [row.get("subset_id", i) for i, row in enumerate(rows)]
    if higher_is_better is None:
        # Only a loss goes one way by name. Flat rows (`store.labels()`, a DataFrame) no longer say which columns
        # were generated-answer scores, so any other target must say its direction.
        if not target.lower().endswith("loss"):
            raise ValueError(
                f"`{target}` is not a loss (its name does not end in `loss`): say which way it goes. Pass "
                f"`higher_is_better=True` to fit log(1 - {target}) (ROUGE, exact match, accuracy) or "
                f"`higher_is_better=False` to fit log({target}) (error rates such as WER)."
            )
        higher_is_better = False
    y = _response(_column(rows, target, ids, what="label"), target, ids, higher_is_better)
    X = {c: _column(rows, c, ids, what="indicator") for c in candidates}
    _check_design(X, len(rows))

    chosen = _select(y, X, candidates, selection, alpha)
    fit = _ols(y, X, chosen)
    table = _table(fit, X, chosen)
    folds = min(cv_folds, len(rows))
    cv = _cv_r_squared(y, X, chosen, folds, seed)
    notes = _warnings(table, len(rows), len(chosen), cv)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)

    result = FitResult(
        rule=None,
        target=target,
        selection=selection,
        candidates=candidates,
        n_subsets=len(rows),
        r_squared=float(fit.rsquared),
        adj_r_squared=float(fit.rsquared_adj),
        f_statistic=float(fit.fvalue),
        f_pvalue=float(fit.f_pvalue),
        aic=float(fit.aic),
        bic=float(fit.bic),
        cv_r_squared=cv,
        cv_folds=folds,
        table=table,
        warnings=notes,
        model=fit,
        higher_is_better=higher_is_better,
    )
    # The range of each mean the rule is fitted on: `predict` clips single rows into it (see `QualityRule.domain`).
    domain = {c: (float(X[c].min()), float(X[c].max())) for c in result.indicators}
    result.rule = _make_rule(result, meta, indicator_specs, name, provenance, domain)
    chosen_transforms = {c: t for c, t in (transforms or {}).items() if c in result.indicators}
    result.rule = dataclasses.replace(result.rule, transforms=chosen_transforms, out_of_range=out_of_range)
    return result


def _rows(records) -> tuple[list[dict], list[dict]]:
    """Flat label rows and the raw records they came from (for provenance)."""
    if isinstance(records, LabelStore):
        return records.labels(), records.records("subset_done")
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # pandas.DataFrame
        records = records.to_dict("records")
    elif hasattr(records, "to_list") and hasattr(records, "features"):  # datasets.Dataset
        records = records.to_list()
    records = list(records)
    if not records or not all(isinstance(r, Mapping) for r in records):
        raise ValueError("`records` must be a LabelStore or a non-empty list of dicts (one per labelled subset).")
    rows = []
    for record in records:
        if record.get("kind") not in (None, "subset_done"):
            continue
        row = {k: v for k, v in record.items() if k not in ("indicator_means", "eval_losses", "eval_scores")}
        row.update(record.get("eval_losses") or {})
        row.update(record.get("eval_scores") or {})
        row.update(record.get("indicator_means") or {})
        rows.append(row)
    if not rows:
        raise ValueError("`records` holds no `subset_done` rows: label some subsets first.")
    return rows, [r for r in records if r.get("kind") == "subset_done"]


def _response(values: np.ndarray, target: str, ids: list, higher_is_better: bool) -> np.ndarray:
    """log(loss), or log(1 - score): an error-like response where lower is better either way."""
    if higher_is_better:
        bad = [ids[i] for i in np.flatnonzero((values < 0) | (values >= 1))]
        if bad:
            raise ValueError(
                f"`higher_is_better=True` fits log(1 - {target}), so `{target}` must be in [0, 1); subsets {bad[:10]} "
                "are outside (a perfect score of 1 has no log error; rescale scores given in percent by 1/100)."
            )
        return np.log1p(-values)
    if np.any(values <= 0):
        bad = [ids[i] for i in np.flatnonzero(values <= 0)]
        raise ValueError(f"`{target}` must be positive to take its log; subsets {bad[:10]} have values <= 0.")
    return np.log(values)


def _column(rows: list[dict], column: str, ids: list, what: str) -> np.ndarray:
    try:
        values = np.array([np.nan if row.get(column) is None else row[column] for row in rows], dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"The {what} `{column}` has non-numeric values: {err}.") from None
    bad = [ids[i] for i in np.flatnonzero(~np.isfinite(values))]
    if bad:
        raise ValueError(
            f"The {what} `{column}` is NaN, missing or infinite for {len(bad)} subset(s), e.g. {bad[:10]}; "
            "re-run their labelling or drop them."
        )
    return values


def _check_design(X: dict[str, np.ndarray], n: int) -> None:
    for column, values in X.items():
        if np.ptp(values) == 0:
            raise ValueError(
                f"The indicator `{column}` is constant ({values[0]:g}) across all {n} subsets, so its effect cannot be "
                "estimated; drop it from `indicators=` or sample more varied subsets."
            )
    p = len(X)
    if n <= p + 1:
        raise ValueError(
            f"{n} subsets cannot fit {p} indicator(s) plus an intercept: OLS needs more subsets than parameters "
            f"(at least {p + 2}; {SUBSETS_PER_INDICATOR * p} or more for stable estimates)."
        )
    design = np.column_stack([np.ones(n), *X.values()])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(
            f"The indicators {list(X)} are perfectly collinear (one is a linear combination of others); drop one."
        )


def _ols(y: np.ndarray, X: dict[str, np.ndarray], columns: list[str]):
    import statsmodels.api as sm

    design = sm.add_constant(np.column_stack([X[c] for c in columns]), has_constant="add")
    return sm.OLS(y, design).fit()


def _select(y, X, candidates: list[str], selection: str, alpha: float) -> list[str]:
    if selection == "all":
        return list(candidates)
    if selection == "backward":
        chosen = list(candidates)
        while len(chosen) > 1:
            pvalues = _ols(y, X, chosen).pvalues[1:]
            worst = int(np.argmax(pvalues))
            if pvalues[worst] <= alpha:
                break
            logger.info("Backward elimination drops `%s` (p = %.3g).", chosen[worst], pvalues[worst])
            chosen.pop(worst)
        return chosen
    if len(candidates) > _MAX_BEST_SUBSET:
        raise ValueError(
            f"Best-subset selection by BIC tries 2^p models; {len(candidates)} candidates is too many (at most "
            f"{_MAX_BEST_SUBSET}). Use `selection='backward'` or fewer `indicators=`."
        )
    subsets = (list(s) for k in range(1, len(candidates) + 1) for s in itertools.combinations(candidates, k))
    return min(subsets, key=lambda s: _ols(y, X, s).bic)


def _table(fit, X, columns: list[str]) -> dict[str, dict[str, float | None]]:
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    exog = fit.model.exog
    table = {"intercept": _row(fit, 0, None)}
    for j, column in enumerate(columns, start=1):
        vif = float(variance_inflation_factor(exog, j)) if len(columns) > 1 else 1.0
        table[column] = _row(fit, j, vif)
    return table


def _row(fit, j: int, vif: float | None) -> dict[str, float | None]:
    return {
        "coef": float(fit.params[j]),
        "std_err": float(fit.bse[j]),
        "p_value": float(fit.pvalues[j]),
        "vif": vif,
    }


def _cv_r_squared(y, X, columns: list[str], folds: int, seed: int) -> float | None:
    """Out-of-fold R²: 1 - Σ(y - ŷ_out-of-fold)² / Σ(y - ȳ)²; `None` when a fold's training part is too small."""
    n = len(y)
    if folds < 2 or n - math.ceil(n / folds) <= len(columns) + 1:
        return None
    order = np.random.default_rng(seed).permutation(n)
    predictions = np.empty(n)
    design = np.column_stack([np.ones(n), *(X[c] for c in columns)])
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        beta, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
        predictions[test] = design[test] @ beta
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - predictions) ** 2)) / total if total > 0 else None


def _warnings(table: dict, n: int, p: int, cv: float | None) -> list[str]:
    notes = []
    collinear = {c: row["vif"] for c, row in table.items() if row["vif"] is not None and row["vif"] > VIF_WARNING}
    if collinear:
        listed = ", ".join(f"{c} ({v:.1f})" for c, v in collinear.items())
        notes.append(
            f"strong collinearity: VIF > {VIF_WARNING:g} for {listed}; their coefficients are unstable, consider "
            "`selection='bic'` or dropping one."
        )
    if n < SUBSETS_PER_INDICATOR * p:
        notes.append(
            f"only {n} subsets for {p} indicator(s); about {SUBSETS_PER_INDICATOR * p} or more are needed for stable "
            "coefficients (the paper used 129 for its final rule)."
        )
    if cv is None:
        notes.append("too few subsets for a cross-validated R².")
    return notes


def _make_rule(result: FitResult, meta: list[dict], specs, name, extra, domain):
    from .rules import QualityRule

    recorded = next((r["indicator_specs"] for r in meta if r.get("indicator_specs")), {})
    specs = {**recorded, **(specs or {})}
    provenance = {
        "source": "fit_rule",
        "base_model": _shared(meta, "base_model"),
        "eval_set": _shared(meta, "eval_set"),
        "library_versions": library_versions(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fit": result.to_dict(),
        **(extra or {}),
    }
    return QualityRule(
        intercept=result.table["intercept"]["coef"],
        coefficients={c: result.table[c]["coef"] for c in result.indicators},
        indicators={c: dict(specs.get(c) or {}) for c in result.indicators},
        provenance=provenance,
        name=name,
        domain=domain,
    )


def _shared(meta: list[dict], key: str) -> Any:
    """The value every record agrees on (None when they differ or say nothing)."""
    values = [r.get(key) for r in meta if r.get(key) is not None]
    return values[0] if values and all(v == values[0] for v in values) else None


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
