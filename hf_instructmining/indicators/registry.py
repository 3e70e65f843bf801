"""Build indicators by column name: the registry that every indicator family plugs into.

A column name maps to an indicator factory. Fixed names (`reward`, `mtld`, ...) map directly; families map
by pattern (`knn_6` -> `KNNDistance(k=6)`, `unieval_coherence` -> `UniEval(aspects=["coherence"])`).
Built-in families are named by module path so that looking one up imports only that module.
"""

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import shorten
from .base import Indicator


# column -> "module:Class" for the built-in indicators (imported on first use).
_BUILTIN: dict[str, str] = {
    "input_length": "lengths:InputLength",
    "output_length": "lengths:OutputLength",
    "mtld": "mtld:MTLD",
    "reward": "reward:RewardScore",
    "perplexity": "perplexity:Perplexity",
    "compression_ratio": "repetition:CompressionRatio",
}
_KNN = re.compile(r"knn_([1-9][0-9]*)")
_UNIEVAL = ("unieval_coherence", "unieval_naturalness", "unieval_understandability")
_PERPLEXITY_OUTPUTS = ("end_of_turn_logprob", "ifd", "unconditional_perplexity")
# (pattern, "module:Class", options derived from the match)
_BUILTIN_PATTERNS: list[tuple[re.Pattern, str, Callable[[re.Match], dict[str, Any]]]] = [
    (_KNN, "knn:KNNDistance", lambda m: {"k": int(m[1])}),
    (re.compile("|".join(_UNIEVAL)), "unieval:UniEval", lambda m: {"aspects": [m[0].removeprefix("unieval_")]}),
    (re.compile("|".join(_PERPLEXITY_OUTPUTS)), "perplexity:Perplexity", lambda m: {"outputs": [m[0]]}),
]
# Families whose columns one indicator writes together from one model pass: family -> (the option that lists the
# columns, the prefix a column adds to each listed value). Scoring builds one indicator per family and model.
SHARED_PASS_FAMILIES: dict[str, tuple[str, str]] = {"unieval": ("aspects", "unieval_"), "perplexity": ("outputs", "")}
_CUSTOM: dict[str, Callable[..., Indicator]] = {}


def register_indicator(column: str, factory: Callable[..., Indicator]) -> None:
    """Make `get_indicator(column)` build an indicator with `factory(**options)`.

    Args:
        column (`str`): the column the indicator writes.
        factory (`Callable[..., Indicator]`): usually the indicator class itself.

    Example:

    ```py
    >>> from hf_instructmining.indicators import MTLD, get_indicator, register_indicator
    >>> register_indicator("mtld_strict", lambda **options: MTLD(threshold=0.8, **options))
    >>> get_indicator("mtld_strict").threshold
    0.8
    ```
    """
    if column in _BUILTIN or any(p.fullmatch(column) for p, _, _ in _BUILTIN_PATTERNS):
        raise ValueError(f"`{shorten(column)}` is a built-in indicator column and cannot be re-registered.")
    _CUSTOM[column] = factory


def available_indicators() -> list[str]:
    """The column names `get_indicator` knows (families shown by pattern, e.g. `knn_{k}`)."""
    return sorted([*_BUILTIN, *_PERPLEXITY_OUTPUTS]) + ["knn_{k}", *_UNIEVAL] + sorted(_CUSTOM)


def is_indicator_column(column: str) -> bool:
    """Whether `get_indicator(column)` knows the column: a built-in name, a family member or a registered name.

    The one place that decides what an indicator column is: rules, cards, labels and fits all ask it.

    Example:

    ```py
    >>> from hf_instructmining.indicators.registry import is_indicator_column
    >>> [is_indicator_column(c) for c in ("knn_6", "knn_0", "unieval_coherence", "mtld", "instruction")]
    [True, False, True, True, False]
    ```
    """
    return column in _BUILTIN or column in _CUSTOM or any(p.fullmatch(column) for p, _, _ in _BUILTIN_PATTERNS)


def indicator_columns(columns: Iterable[str]) -> list[str]:
    """The columns, in order, that name an indicator (see [`is_indicator_column`])."""
    return [c for c in columns if isinstance(c, str) and is_indicator_column(c)]


def indicator_family(column: str) -> str:
    """The family a column belongs to: `knn` for `knn_{k}`, `unieval` for the UniEval columns, `perplexity` for the
    columns of one causal LM pass, and the column itself otherwise.

    Example:

    ```py
    >>> from hf_instructmining.indicators.registry import indicator_family
    >>> [indicator_family(c) for c in ("knn_6", "unieval_coherence", "ifd", "mtld")]
    ['knn', 'unieval', 'perplexity', 'mtld']
    ```
    """
    # A built-in family is named after its module: `knn:KNNDistance` -> `knn`.
    return next((target.split(":")[0] for p, target, _ in _BUILTIN_PATTERNS if p.fullmatch(column)), column)


def get_indicator(column: str, **options: Any) -> Indicator:
    """Build the indicator that writes `column`.

    Args:
        column (`str`): an indicator column such as `"reward"`, `"mtld"` or `"knn_6"`.
        **options: passed to the indicator's constructor (e.g. `model=`, `tokenizer=`, `on_invalid=`).

    Returns:
        [`Indicator`]

    Raises:
        `ValueError`: when the name is unknown; the message lists the valid names.

    Example:

    ```py
    >>> from hf_instructmining.indicators import get_indicator
    >>> get_indicator("mtld")
    MTLD(threshold=0.72)
    ```
    """
    if not isinstance(column, str):
        raise TypeError(f"An indicator name must be a string, got {type(column).__name__}.")
    if column in _CUSTOM:
        return _CUSTOM[column](**options)
    if column in _BUILTIN:
        return _load(_BUILTIN[column])(**options)
    for pattern, target, derive in _BUILTIN_PATTERNS:
        match = pattern.fullmatch(column)
        if match:
            return _load(target)(**{**derive(match), **options})
    raise ValueError(f"Unknown indicator `{shorten(column)}`. Known indicators: {available_indicators()}.")


def _load(target: str) -> Callable[..., Indicator]:
    module, name = target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)
