"""How a rule reads one row's indicator values: the scale of each indicator, and what happens outside the range the
rule was fitted on.

A rule is fitted on the means of whole subsets and applied to single rows, which vary far more. Two choices decide
how a row's value enters the linear formula:

- **Transforms** (`QualityRule.transforms`): an indicator may be read on another scale, e.g. lengths and
  perplexities on a log scale, where one 30,000-token row no longer outweighs everything else. The rule is fitted
  on the subset means of the transformed values, so its coefficients and domain are on that scale.
- **The out-of-range policy** (`QualityRule.out_of_range`): what a value beyond the domain (the range of the
  fitted means) counts for. `"clip"` puts it at the domain's edge on both sides, so an extreme row can look no
  better, but also no worse, than the edge. `"clip_helpful"` clips only on the side where the value would make
  the row look better (its coefficient lowers the score) and extrapolates linearly on the harmful side, so a row
  worse than anything fitted keeps counting as worse. `"clip_helpful_saturate"` does the same with a saturating
  extrapolation on the harmful side (`edge + width · log1p(excess / width)`, width = the domain's width), so one
  exploding value cannot drown every other indicator. `"none"` uses every value as it is.
"""

import numpy as np


OUT_OF_RANGE = ("clip", "clip_helpful", "clip_helpful_saturate", "none")
DEFAULT_OUT_OF_RANGE = "clip"

# name -> (function, the values it is defined on, in words, and as a test)
TRANSFORMS = {
    "log": (np.log, "positive values", lambda x: x > 0),
    "log1p": (np.log1p, "values above -1", lambda x: x > -1),
    # sign(x) · log(1 + |x|): a log scale for values of either sign (log-probabilities), monotone and defined
    # everywhere.
    "signed_log1p": (lambda x: np.sign(x) * np.log1p(np.abs(x)), "every value", lambda x: np.ones_like(x, bool)),
    # exp of a log-probability is the probability itself, bounded in [0, 1].
    "exp": (np.exp, "values at most 700", lambda x: x <= 700),
}


def transform(values: np.ndarray, name: str | None, column: str) -> np.ndarray:
    """`values` on the scale `name` (`None`: as they are); NaN stays NaN.

    Raises:
        `ValueError`: a value lies where the transform is not defined (e.g. `log` of 0); names the column and rows.
    """
    if name is None:
        return values
    function, defined_on, test = TRANSFORMS[name]
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~np.isnan(values) & ~test(values))
    if bad.size:
        raise ValueError(
            f"The indicator column `{column}` is read on the scale `{name}`, defined for {defined_on} only, but row(s) "
            f"{bad[:10].tolist()} hold {values[bad[:3]].tolist()}. Check the indicator's values, or use a rule "
            f"without a transform for `{column}`."
        )
    return function(values)


def apply_policy(
    values: np.ndarray, low: float, high: float, coefficient: float, policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values a coefficient multiplies under `policy`, and where they were clipped to `low` and to `high`.

    The helpful side is the one where a larger (coefficient < 0) or smaller (coefficient > 0) value lowers the
    predicted loss, i.e. makes the row look better.
    """
    below, above = values < low, values > high  # NaN is neither
    if policy == "none":
        return values, np.zeros_like(below), np.zeros_like(above)
    if policy == "clip" or coefficient == 0:
        return np.clip(values, low, high), below, above
    helpful_high = coefficient < 0
    used = np.where(above, high, values) if helpful_high else np.where(below, low, values)
    if policy == "clip_helpful_saturate" and high > low:  # a domain of zero width has no scale: linear
        width = high - low
        excess = (low - values) / width if helpful_high else (values - high) / width
        stretched = width * np.log1p(np.maximum(excess, 0))
        if helpful_high:
            used = np.where(below, low - stretched, used)
        else:
            used = np.where(above, high + stretched, used)
    none = np.zeros_like(below)
    return used, (none if helpful_high else below), (above if helpful_high else none)
