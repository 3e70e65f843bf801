"""What the packaged `evaluate` measurement modules share: their info, the indicator families and the computation.

The module scripts stay thin: `evaluate.load` copies a script on its own into its module cache, and everything it
does beyond `_info` and `_compute` lives here, in the installed package.
"""

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any


logger = logging.getLogger(__name__)

CITATION = """\
@inproceedings{cao2024instruction,
  title     = {Instruction Mining: Instruction Data Selection for Tuning Large Language Models},
  author    = {Cao, Yihan and Kang, Yanbin and Wang, Chi and Sun, Lichao},
  booktitle = {First Conference on Language Modeling (COLM)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2307.06290}
}
"""
# The parts of the modules' `_KWARGS_DESCRIPTION` they share: the inputs, and the row counts among the outputs.
INPUTS_DESCRIPTION = """
Args:
    instructions (`list[str]`): the instruction of each example (for Alpaca data, instruction and input joined by a
        blank line).
    responses (`list[str]`): the response of each example.
"""
COUNTS_DESCRIPTION = """\
    num_rows (`int`): how many examples were given.
    num_invalid (`int`): how many could not be scored (e.g. an empty response); they count in no mean.
"""
# Indicator family (one module of `hf_instructmining.indicators`) -> the columns it writes; `{k}` is the `k` option.
INDICATOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "lengths": ("input_length", "output_length"),
    "mtld": ("mtld",),
    "reward": ("reward",),
    "perplexity": ("perplexity",),
    "unieval": ("unieval_naturalness", "unieval_coherence", "unieval_understandability"),
    "knn": ("knn_{k}",),
}
_DEFAULT_K = 6  # the paper's knn_6


def measurement_info(description: str, inputs_description: str):
    """The `evaluate.MeasurementInfo` of a module that reads `instructions` and `responses`."""
    import datasets
    import evaluate

    return evaluate.MeasurementInfo(
        module_type="measurement",
        description=description,
        citation=CITATION,
        inputs_description=inputs_description,
        features=datasets.Features({"instructions": datasets.Value("string"), "responses": datasets.Value("string")}),
        reference_urls=["https://arxiv.org/abs/2307.06290"],
    )


def family_rule(family: str, options: Mapping[str, Any] | None = None):
    """A rule of zero coefficients over a family's columns, carrying `options` as each column's indicator spec.

    `compute_indicators` takes per-column options (a revision, an MTLD threshold) only through a rule's
    `indicators`, and checks them there; the rule's prediction is never reported.

    Raises:
        `ValueError`: an unknown family (the message lists them) or a `k` that is not a positive integer.
    """
    from ..rules import QualityRule

    if family not in INDICATOR_FAMILIES:
        raise ValueError(f"Unknown indicator family `{family}`; the families are {list(INDICATOR_FAMILIES)}.")
    spec = dict(options or {})
    k = spec.pop("k", _DEFAULT_K) if family == "knn" else None
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"`k` must be a positive integer, got `{k!r}`.")
    columns = [column.format(k=k) for column in INDICATOR_FAMILIES[family]]
    return QualityRule(0.0, dict.fromkeys(columns, 0.0), {c: dict(spec) for c in columns}, name=family)


def check_indicators(rule, models: Mapping[str, str] | None, device: str | None, on_invalid: str) -> None:
    """Build the rule's indicators once (no model loads) so that bad options fail at load time, not in `compute`.

    Warns here, once, when `models` replaces a model the rule was fitted with.
    """
    from ..scoring import ScoreConfig
    from ..scoring.plan import plan_indicators

    config = ScoreConfig(models=dict(models or {}), device=device, on_invalid=on_invalid)
    plan_indicators(rule.indicators, config, fitted=rule, stacklevel=3)


def summarize_pairs(
    instructions: Sequence[str],
    responses: Sequence[str],
    rule,
    *,
    models: Mapping[str, str] | None = None,
    device: str | None = None,
    on_invalid: str = "nan",
):
    """Compute the rule's indicators for (instruction, response) pairs (KNN over all of them) and summarise them.

    Returns:
        [`~hf_instructmining.scoring.DatasetSummary`]
    """
    import datasets

    from ..scoring import compute_indicators, summarize_dataset

    pairs = datasets.Dataset.from_dict({"instruction": list(instructions), "output": list(responses)})
    with warnings.catch_warnings():
        # Already said once, when the measurement was loaded.
        warnings.filterwarnings("ignore", message="The coefficients of the rule", category=UserWarning)
        scored = compute_indicators(pairs, rule=rule, models=models, device=device, on_invalid=on_invalid)
    return summarize_dataset(scored, rule=rule)


def counts_and_means(summary) -> dict[str, float | int]:
    """`num_rows`, `num_invalid` and `mean_<column>` for each summarised indicator column."""
    result: dict[str, float | int] = {"num_rows": summary.num_rows, "num_invalid": summary.num_invalid}
    result.update({f"mean_{column}": mean for column, mean in summary.means.items()})
    return result
