"""Plan the indicators a rule needs: rebuild each from its spec, apply the caller's models and options, share loads.

A rule's `indicators` say how each coefficient's indicator was made (model id, revision, options). Scoring rebuilds
them with `get_indicator(column, **spec)`, replaces models the caller names (warning that the coefficients were fitted
with other models), passes the shared options (device, invalid-row policy, layout) to the indicators that take
them, and builds one UniEval indicator for all UniEval columns that share a model.
"""

import inspect
import json
import logging
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .indicators import Indicator, get_indicator
from .indicators.registry import SHARED_PASS_FAMILIES, indicator_family
from .rules import QualityRule, builtin_rules


if TYPE_CHECKING:
    from .scoring import ScoreConfig


logger = logging.getLogger(__name__)

# The option naming an indicator's model, in order of preference (the length indicators take a tokenizer).
_MODEL_OPTIONS = ("model", "tokenizer")
# Options every indicator of a scorer shares, applied where the indicator takes them.
_SHARED_OPTIONS = ("device", "on_invalid", "format", "column_mapping")


def resolve_rule(rule: QualityRule | str | Mapping[str, Any]) -> QualityRule:
    """A [`QualityRule`] from a rule, a built-in name, a JSON file, a folder or Hub repo, or a rule dict."""
    if isinstance(rule, QualityRule):
        return rule
    if isinstance(rule, Mapping):
        return QualityRule.from_dict(dict(rule))
    if not isinstance(rule, (str, os.PathLike)):
        raise TypeError(f"`rule` must be a QualityRule, a rule name or a path, got {type(rule).__name__}.")
    if rule in builtin_rules():
        return QualityRule.from_builtin(rule)
    return QualityRule.from_pretrained(rule)


def plan_indicators(
    specs: Mapping[str, Mapping[str, Any]],
    config: "ScoreConfig",
    *,
    fitted: QualityRule | None = None,
    reference: Any = None,
    stacklevel: int = 2,
) -> list[Indicator]:
    """Build the indicators that write `specs`' columns, one per model where a family shares one pass (UniEval,
    the perplexity family).

    Args:
        specs (`Mapping[str, Mapping]`): indicator column -> options (a rule's `indicators`).
        config ([`ScoreConfig`]): `models` replace the specs' models; `device`, `on_invalid`, `format` and
            `column_mapping` go to every indicator that takes them.
        fitted ([`QualityRule`], *optional*): the rule whose coefficients assume the specs' models; replacing one
            of its models warns once, naming every replaced model.
        reference (`datasets.Dataset` or `np.ndarray`, *optional*): the neighbour set of the KNN indicators.
        stacklevel (`int`, *optional*, defaults to `2`): of that warning, as in `warnings.warn` (2: the caller).

    Returns:
        `list[Indicator]`: together they write exactly the columns of `specs`.
    """
    families = {c: indicator_family(c) for c in specs}
    unknown = sorted(set(config.models) - set(specs) - set(families.values()))
    if unknown:
        raise ValueError(
            f"`models` has key(s) {unknown} that name no indicator needed here; use one of "
            f"{sorted(set(specs) | set(families.values()))}."
        )
    options: dict[str, dict[str, Any]] = {}
    replaced = []
    for column, spec in specs.items():
        base = _build(column, dict(spec))
        opts = dict(spec)
        override = config.models.get(column, config.models.get(families[column]))
        if override is not None:
            key = next((k for k in _MODEL_OPTIONS if _accepts(type(base), k)), None)
            if key is None:
                raise ValueError(f"`models[{column!r}]` is given, but the `{column}` indicator uses no model.")
            if override != getattr(base, key):
                # Only the rule's own indicators carry its calibration; extra columns computed alongside do not.
                if fitted is not None and column in fitted.coefficients:
                    replaced.append(f"`{column}`: {getattr(base, key)} -> {override}")
                opts[key] = override
                opts["revision"] = None  # the rule's revision belongs to the rule's model
        for name in _SHARED_OPTIONS:
            value = getattr(config, name)
            if value is not None and _accepts(type(base), name):
                opts[name] = value
        if reference is not None and _accepts(type(base), "reference"):
            opts["reference"] = reference
        options[column] = opts
    if fitted is not None and replaced:
        warnings.warn(
            f"The coefficients of the rule {fitted.name or '(unnamed)'} were fitted with indicators from other "
            f"models than the ones given ({'; '.join(replaced)}), so its scores are not calibrated: they still rank "
            "data, but predicted losses are approximate. Refit the rule with `fit_rule` for these models.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return _group(options, families)


def _group(options: dict[str, dict[str, Any]], families: dict[str, str]) -> list[Indicator]:
    """One indicator per column, except the columns of a family that one model pass writes (UniEval's aspects, the
    perplexity family's outputs) with the same options: one indicator for all of them."""
    indicators: list[Indicator] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for column, opts in options.items():
        if families[column] in SHARED_PASS_FAMILIES:
            # The option listing the columns (`aspects`, `outputs`) is set per group below: it does not split groups.
            listing, _ = SHARED_PASS_FAMILIES[families[column]]
            shared = {k: v for k, v in opts.items() if k != listing}
            key = (families[column], json.dumps(shared, sort_keys=True, default=str))
            groups.setdefault(key, []).append(column)
        else:
            indicators.append(_build(column, opts))
    for (name, _), columns in groups.items():
        listing, prefix = SHARED_PASS_FAMILIES[name]
        values = [c.removeprefix(prefix) for c in columns]
        indicators.append(_build(columns[0], {**options[columns[0]], listing: values}))
    written = [c for indicator in indicators for c in indicator.columns]
    if sorted(written) != sorted(options):
        raise RuntimeError(f"The indicators write {written}, expected {list(options)}.")
    return indicators


def _build(column: str, options: dict[str, Any]) -> Indicator:
    try:
        return get_indicator(column, **options)
    except TypeError as err:
        raise ValueError(f"The options {options} do not build the `{column}` indicator: {err}") from None


def _accepts(cls: type, option: str) -> bool:
    """Whether the indicator class (or a base its `**kwargs` reach) takes `option`."""
    return any(
        option in inspect.signature(klass.__init__).parameters for klass in cls.__mro__ if "__init__" in vars(klass)
    )


def is_knn(indicator: Indicator) -> bool:
    return any(indicator_family(c) == "knn" for c in indicator.columns)


def load_reference(reference: Any) -> Any:
    """The neighbour set of KNN indicators: a `Dataset` or embeddings as given, or a dataset loaded from a path
    (a `save_to_disk` folder, or a `.json`/`.jsonl`/`.csv`/`.parquet` file) or a Hub id (its `train` split)."""
    if reference is None or not isinstance(reference, (str, os.PathLike)):
        return reference
    import datasets

    path = os.fspath(reference)
    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    extension = os.path.splitext(path)[1].lower()
    if os.path.isfile(path) and extension in builders:
        return datasets.load_dataset(builders[extension], data_files=path, split="train")
    return datasets.load_dataset(path, split="train")
