"""`evaluate` measurement modules shipped inside the package, loaded by local path (no Hub needed).

Each module lives in its own folder (`<name>/<name>.py`, a `README.md` card and `requirements.txt`), the layout
`evaluate.load` reads from a local path.
"""

import logging
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..import_utils import require


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
        `predicted_eval_loss`, `num_rows`, `num_invalid` and `mean_<indicator>` for each indicator of the rule.

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

    path = os.fspath(resources.files(__name__).joinpath("instructmining"))
    return evaluate.load(path, rule=rule, models=models, device=device, on_invalid=on_invalid, **load_kwargs)
