"""Label training subsets with the eval loss of a model finetuned on each (InstructMining, Section 3.2).

`sample_subsets` draws the subsets, `run_labeling` finetunes on each with TRL's `SFTTrainer`,
`EvalLossCallback` records every evaluation into a crash-safe `LabelStore`, and
[`~hf_instructmining.fit_rule`] regresses the labels on the subsets' mean indicators.
Names load lazily: importing this package does not import torch, transformers or trl.
"""

import importlib
from typing import TYPE_CHECKING


_ATTRS = {
    "Subset": "subsets",
    "sample_subsets": "subsets",
    "split_by_column": "subsets",
    "EvalLossCallback": "callback",
    "LabelStore": "store",
    "LabelingConfig": "config",
    "finetune_and_evaluate": "finetune",
    "run_labeling": "runner",
}
__all__ = sorted(_ATTRS)

if TYPE_CHECKING:
    from .callback import EvalLossCallback
    from .config import LabelingConfig
    from .finetune import finetune_and_evaluate
    from .runner import run_labeling
    from .store import LabelStore
    from .subsets import Subset, sample_subsets, split_by_column


def __getattr__(name: str):
    if name in _ATTRS:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
