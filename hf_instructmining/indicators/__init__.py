"""Natural-language indicators of instruction-data quality, one module per family, built by name.

Every indicator is a `Dataset.map` function: `ds.map(MTLD(), batched=True)` adds the `mtld` column.
Model-based indicators (reward, perplexity, UniEval, KNN) are imported on first access, so importing this
package does not import torch.
"""

import importlib
from typing import TYPE_CHECKING

from .base import Indicator
from .lengths import InputLength, OutputLength
from .mtld import MTLD
from .registry import available_indicators, get_indicator, register_indicator
from .repetition import CompressionRatio


_LAZY = {
    "RewardScore": "reward",
    "Perplexity": "perplexity",
    "UniEval": "unieval",
    "KNNDistance": "knn",
    "ModelIndicator": "_model_base",
}

__all__ = sorted(
    [
        "CompressionRatio",
        "Indicator",
        "InputLength",
        "OutputLength",
        "MTLD",
        "available_indicators",
        "get_indicator",
        "register_indicator",
    ]
    + list(_LAZY)
)

if TYPE_CHECKING:
    from ._model_base import ModelIndicator
    from .knn import KNNDistance
    from .perplexity import Perplexity
    from .reward import RewardScore
    from .unieval import UniEval


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
