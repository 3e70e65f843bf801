"""hf-instructmining: find the instruction-tuning data worth training on (InstructMining, arXiv 2307.06290).

Public names load lazily, so `import hf_instructmining` imports neither torch, trl nor flaml.

Example:

```py
>>> import datasets, hf_instructmining as im
>>> ds = datasets.Dataset.from_list([{"instruction": "Say hi", "output": "Hello there, friend."}])
>>> ds.map(im.MTLD(), batched=True)[0]["mtld"]
3.0
```
"""

import importlib
from typing import TYPE_CHECKING

from ._version import __version__


# submodule -> public names it defines (the contract in DESIGN.md)
_SUBMOD_ATTRS: dict[str, list[str]] = {
    "formats": ["detect_format", "extract_pairs"],
    "indicators": [
        "InputLength",
        "KNNDistance",
        "MTLD",
        "OutputLength",
        "Perplexity",
        "RewardScore",
        "UniEval",
        "get_indicator",
    ],
    "fitting": ["FitResult", "fit_rule"],
    "hub": ["PushConfig", "push_to_hub", "save_scored"],
    "labeling": [
        "EvalLossCallback",
        "LabelStore",
        "LabelingConfig",
        "finetune_and_evaluate",
        "run_labeling",
        "sample_subsets",
    ],
    "measurements": ["load_indicator_measurement", "load_measurement"],
    "rules": ["QualityRule"],
    "scale.multi_gpu": ["score_on_gpus"],
    "scale.ray_labeling": ["run_labeling_with_ray", "search_subset_size_with_ray"],
    "scale.ray_scoring": ["score_with_ray"],
    "scoring": ["InstructScorer", "ScoreConfig", "compute_indicators", "instruct_score", "summarize_dataset"],
    "search": ["SearchConfig", "SearchResult", "search_subset_size"],
    "selection": ["select_fraction", "select_threshold", "select_top_k"],
}
_ATTR_TO_SUBMOD = {attr: mod for mod, attrs in _SUBMOD_ATTRS.items() for attr in attrs}

__all__ = sorted(["__version__", "indicators", *_ATTR_TO_SUBMOD])

if TYPE_CHECKING:
    from . import indicators
    from .fitting import FitResult, fit_rule
    from .formats import detect_format, extract_pairs
    from .hub import PushConfig, push_to_hub, save_scored
    from .indicators import (
        MTLD,
        InputLength,
        KNNDistance,
        OutputLength,
        Perplexity,
        RewardScore,
        UniEval,
        get_indicator,
    )
    from .labeling import (
        EvalLossCallback,
        LabelingConfig,
        LabelStore,
        finetune_and_evaluate,
        run_labeling,
        sample_subsets,
    )
    from .measurements import load_indicator_measurement, load_measurement
    from .rules import QualityRule
    from .scale.multi_gpu import score_on_gpus
    from .scale.ray_labeling import run_labeling_with_ray, search_subset_size_with_ray
    from .scale.ray_scoring import score_with_ray
    from .scoring import InstructScorer, ScoreConfig, compute_indicators, instruct_score, summarize_dataset
    from .search import SearchConfig, SearchResult, search_subset_size
    from .selection import select_fraction, select_threshold, select_top_k


def __getattr__(name: str):
    if name in _ATTR_TO_SUBMOD:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTR_TO_SUBMOD[name]}"), name)
        globals()[name] = value
        return value
    if name == "indicators":
        return importlib.import_module(f"{__name__}.indicators")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
