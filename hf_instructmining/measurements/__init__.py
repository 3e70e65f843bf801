"""`evaluate` measurement modules shipped inside the package, loaded by local path (no Hub needed).

Each module lives in its own folder (`<name>/<name>.py`, a `README.md` card and `requirements.txt`), the layout
`evaluate.load` reads from a local path: `instructmining`, the rule's dataset-quality estimate, and
`instructmining_indicators`, the mean of one indicator family per configuration.
"""

import logging
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..import_utils import require
from ._measure import family_rule


logger = logging.getLogger(__name__)


def load_measurement(
    rule: Any = None,
    models: Mapping[str, str] | None = None,
    *,
    device: str | None = None,
    on_invalid: str = "nan",
    **load_kwargs,
):
    """Load the InstructMining `evaluate` measurement: indicator means and the rule's predicted log eval loss.

    Args:
        rule ([`QualityRule`] or `str`, *optional*): a rule, a built-in rule name, a rule file, or a folder or Hub
            repo holding `instructmining_rule.json`; the default rule (`instructmining-llama2-7b`) when `None`.
        models (`dict[str, str]`, *optional*): indicator column or family -> model id or local path, replacing the
            rule's models (warns: the estimate is then not calibrated to the rule).
        device (`str`, *optional*): where model indicators run.
        on_invalid (`str`, *optional*, defaults to `"nan"`): unreadable rows are counted in `num_invalid` and left
            out of the means (`"nan"`), or stop the computation (`"raise"`).
        **load_kwargs: passed to `evaluate.load` (`cache_dir`, `keep_in_memory`, `experiment_id`, ...).

    Returns:
        `evaluate.Measurement`: `compute(instructions=[...], responses=[...])` returns `predicted_log_eval_loss`,
        `predicted_eval_loss`, `response` (what the rule predicts: `log L_eval`, or e.g. `log(1 - eval_rougeL)` for a
        rule fitted to a score), `num_rows`, `num_invalid` and `mean_<indicator>` for each indicator of the rule.

    Example:

    ```py
    >>> from hf_instructmining import QualityRule, load_measurement
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}})
    >>> result = load_measurement(rule=rule).compute(instructions=["Say hi"], responses=["Hello there, friend."])
    >>> result["predicted_log_eval_loss"], result["mean_mtld"], result["num_invalid"]
    (0.97, 3.0, 0)
    ```
    """
    require("evaluate", "load_measurement")
    import evaluate

    return evaluate.load(
        _module_path("instructmining"), rule=rule, models=models, device=device, on_invalid=on_invalid, **load_kwargs
    )


def load_indicator_measurement(
    family: str,
    options: Mapping[str, Any] | None = None,
    *,
    device: str | None = None,
    on_invalid: str = "nan",
    **load_kwargs,
):
    """Load the `evaluate` measurement of one indicator family: the mean of each of its columns.

    The module is `instructmining_indicators`, one configuration per family, loaded with
    `evaluate.load(<its path>, config_name=family)`.

    Args:
        family (`str`): `"lengths"` (`input_length`, `output_length`), `"mtld"`, `"reward"`, `"perplexity"`,
            `"unieval"` (`unieval_naturalness`, `unieval_coherence`, `unieval_understandability`) or `"knn"`
            (`knn_<k>`, over the examples given to `compute`).
        options (`dict`, *optional*): the indicator's options, as `get_indicator(column, **options)` takes them:
            `model` (`tokenizer` for `lengths`), `revision`, `threshold` for `mtld`, `k` for `knn` (defaults to `6`),
            and so on; each indicator's defaults when `None`.
        device (`str`, *optional*): where model indicators run.
        on_invalid (`str`, *optional*, defaults to `"nan"`): unreadable rows are counted in `num_invalid` and left
            out of the means (`"nan"`), or stop the computation (`"raise"`).
        **load_kwargs: passed to `evaluate.load` (`cache_dir`, `keep_in_memory`, `experiment_id`, ...).

    Returns:
        `evaluate.Measurement`: `compute(instructions=[...], responses=[...])` returns `num_rows`, `num_invalid` and
        `mean_<column>` for each column of the family.

    Raises:
        `ValueError`: an unknown family (the message lists them) or options its indicator does not take.

    Example:

    ```py
    >>> from hf_instructmining import load_indicator_measurement
    >>> mtld = load_indicator_measurement("mtld", {"threshold": 0.72})
    >>> mtld.compute(instructions=["Say hi"], responses=["Hello there, friend."])
    {'num_rows': 1, 'num_invalid': 0, 'mean_mtld': 3.0}
    ```
    """
    require("evaluate", "load_indicator_measurement")
    import evaluate

    family_rule(family, options)  # checks the family and `k` before evaluate copies the module into its cache
    return evaluate.load(
        _module_path("instructmining_indicators"),
        config_name=family,
        options=dict(options or {}),
        device=device,
        on_invalid=on_invalid,
        **load_kwargs,
    )


def _module_path(name: str) -> str:
    return os.fspath(resources.files(__name__).joinpath(name))
