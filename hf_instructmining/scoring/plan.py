"""Plan the indicators a rule needs: rebuild each from its spec, apply the caller's models and options, share loads.

A rule's `indicators` say how each coefficient's indicator was made (model id, revision, options). Scoring rebuilds
them with `get_indicator(column, **spec)`, replaces models the caller names (warning that the coefficients were fitted
with other models), passes the shared options (device, invalid-row policy, layout) to the indicators that take
them, and builds one UniEval indicator for all UniEval columns that share a model.
"""

import difflib
import inspect
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import offline
from ..indicators import Indicator, available_indicators, get_indicator
from ..indicators.registry import SHARED_PASS_FAMILIES, indicator_family, is_indicator_column
from ..loading import load_rows
from ..rules import RULE_FILENAME, QualityRule, builtin_rules


if TYPE_CHECKING:
    from .config import ScoreConfig


logger = logging.getLogger(__name__)

# The families a `models=` key may name for all their columns.
_FAMILIES = ("knn", *SHARED_PASS_FAMILIES)
# The option naming an indicator's model, in order of preference (the length indicators take a tokenizer).
_MODEL_OPTIONS = ("model", "tokenizer")
# Options every indicator of a scorer shares, applied where the indicator takes them.
_SHARED_OPTIONS = ("device", "on_invalid", "format", "column_mapping")
# A Hub repo id as `hf_hub_download` takes it: `owner/name`.
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_rule(rule: QualityRule | str | Mapping[str, Any]) -> QualityRule:
    """A [`QualityRule`] from a rule, a built-in name, a JSON file, a folder or Hub repo, or a rule dict.

    A name that is none of these fails at once, listing the built-in rules and the close ones; so does a Hub repo
    id when the Hub is offline or unreachable and its rule is not in the Hugging Face cache (no network wait).
    """
    if isinstance(rule, QualityRule):
        return rule
    if isinstance(rule, Mapping):
        return QualityRule.from_dict(dict(rule))
    if not isinstance(rule, (str, os.PathLike)):
        raise TypeError(f"`rule` must be a QualityRule, a rule name or a path, got {type(rule).__name__}.")
    name = os.fspath(rule)
    if name in builtin_rules():
        return QualityRule.from_builtin(name)
    if os.path.exists(name):
        return QualityRule.from_pretrained(name)
    close, builtins = _close(name, builtin_rules()), f"the built-in rules are {builtin_rules()}"
    if name.lower().endswith(".json") or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No rule file or folder `{name}`{close}; {builtins}.")
    if not _REPO_ID.fullmatch(name):
        raise ValueError(
            f"Unknown rule `{name}`{close}: not a built-in rule, a rule file or folder, or a Hub repo id "
            f"(`owner/name`); {builtins}."
        )
    if not offline.hub_reachable() and not _rule_cached(name):
        raise ValueError(
            f"The rule `{name}`{close} is not a built-in rule, file or folder, and the Hub is {_hub_state()} with no "
            f"cached copy of that repo; {builtins}."
        )
    return QualityRule.from_pretrained(name)


def _rule_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, RULE_FILENAME, repo_type=kind), str)
        for kind in ("model", "dataset")
    )


def _hub_state() -> str:
    from huggingface_hub import constants

    return "offline (`HF_HUB_OFFLINE=1`)" if constants.HF_HUB_OFFLINE else "not reachable"


def _close(name: str, choices: Sequence[str]) -> str:
    """`" (did you mean `x`?)"` for the choice closest to `name`, else `""`."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def offline_rules() -> list[str]:
    """The built-in rules that score with no Hub access: every model they use has an offline copy.

    Example:

    ```py
    >>> from hf_instructmining.scoring.plan import offline_rules
    >>> offline_rules()
    ['instructmining-smollm2-135m']
    ```
    """
    return [
        name
        for name in builtin_rules()
        if all(
            model in offline.OFFLINE_COPIES
            for column, spec in QualityRule.from_builtin(name).indicators.items()
            for model in _models(_build(column, dict(spec)))
        )
    ]


def _models(indicator: Indicator) -> list[str]:
    """The Hub ids or folders an indicator loads (its model, or the tokenizer of a length indicator)."""
    return [name for key in _MODEL_OPTIONS if isinstance(name := getattr(indicator, key, None), str)]


def require_models(indicators: Sequence[Indicator]) -> None:
    """Fail before any work when a model cannot be loaded: offline, not in the Hugging Face cache, no offline copy.

    Raises:
        `ValueError`: names each such model, the column that needs it, and what to do instead.
    """
    missing: dict[str, list[str]] = {}
    for indicator in indicators:
        revision = getattr(indicator, "revision", None)
        for name in _models(indicator):
            if os.path.isdir(name) or offline.in_hub_cache(name, revision) or offline.hub_reachable():
                continue
            missing.setdefault(name, []).extend(indicator.columns)
    if not missing:
        return
    listed = "; ".join(f"`{name}` (for {', '.join(f'`{c}`' for c in columns)})" for name, columns in missing.items())
    installable = [offline.OFFLINE_COPIES[n].install for n in missing if n in offline.OFFLINE_COPIES]
    fixes = [f"install the offline copies (`{'`, `'.join(installable)}`)"] if installable else []
    fixes.append(f"score with a rule whose models all install offline ({offline_rules()})")
    fixes.append("pass local model folders with `models=`, or connect to the Hub")
    raise ValueError(
        f"Cannot load {listed}: not a local folder, not in the Hugging Face cache, and the Hub is {_hub_state()}; "
        f"{', or '.join(fixes)}."
    )


def plan_indicators(
    specs: Mapping[str, Mapping[str, Any]],
    config: "ScoreConfig",
    *,
    fitted: QualityRule | None = None,
    reference: Any = None,
    stacklevel: int = 2,
    require: bool = False,
) -> list[Indicator]:
    """Build the indicators that write `specs`' columns, one per model where a family shares one pass (UniEval,
    the perplexity family).

    A model that the Hub cannot serve (offline or unreachable, not in the Hugging Face cache) is replaced by its
    offline copy when one is installed (see [`~hf_instructmining.offline.offline_substitute`]), with a warning.

    Args:
        specs (`Mapping[str, Mapping]`): indicator column -> options (a rule's `indicators`).
        config ([`ScoreConfig`]): `models` replace the specs' models; `device`, `on_invalid`, `format` and
            `column_mapping` go to every indicator that takes them.
        fitted ([`QualityRule`], *optional*): the rule whose coefficients assume the specs' models; replacing one
            of its models warns once, naming every replaced model.
        reference (`datasets.Dataset` or `np.ndarray`, *optional*): the neighbour set of the KNN indicators.
        stacklevel (`int`, *optional*, defaults to `2`): of that warning, as in `warnings.warn` (2: the caller).
        require (`bool`, *optional*, defaults to `False`): fail now when a model cannot be loaded (see
            [`require_models`]), as a caller about to compute does; a scorer built for later loads lazily.

    Returns:
        `list[Indicator]`: together they write exactly the columns of `specs`.
    """
    families = {c: indicator_family(c) for c in specs}
    _check_model_keys(config.models, specs, families)
    options: dict[str, dict[str, Any]] = {}
    replaced, substituted = [], {}
    for column, spec in specs.items():
        base = _build(column, dict(spec))
        opts = dict(spec)
        key = next((k for k in _MODEL_OPTIONS if _accepts(type(base), k)), None)
        declared = getattr(base, key) if key else None
        override = config.models.get(column, config.models.get(families[column]))
        if override is not None and key is None:
            raise ValueError(f"`models=` names `{column}`, but the `{column}` indicator uses no model.")
        wanted = declared if override is None else override
        # A Hub id the Hub cannot serve loads from its offline copy, whether the rule or `models` names it.
        revision = opts.get("revision") if override is None else None
        local = offline.offline_substitute(wanted, revision) if isinstance(wanted, str) else None
        if local is not None:
            substituted[wanted] = local
        effective = local or wanted
        if effective != declared:
            # Only the rule's own indicators carry its calibration; extra columns computed alongside do not. The
            # offline copy of the very checkpoint the rule names is that checkpoint, not a replacement.
            copy = offline.copy_of(effective)
            same = wanted == declared or (copy is not None and copy.model_id == declared)
            if fitted is not None and column in fitted.coefficients and not same:
                replaced.append(f"`{column}`: {declared} -> {wanted}")
            opts[key] = effective
            opts["revision"] = None  # the rule's revision belongs to the rule's model
        for name in _SHARED_OPTIONS:
            value = getattr(config, name)
            if value is not None and _accepts(type(base), name):
                opts[name] = value
        if reference is not None and _accepts(type(base), "reference"):
            opts["reference"] = reference
        options[column] = opts
    indicators = _group(options, families)
    if require:
        require_models(indicators)
    if fitted is not None and replaced:
        warnings.warn(
            f"The coefficients of the rule {fitted.name or '(unnamed)'} were fitted with indicators from other "
            f"models than the ones given ({'; '.join(replaced)}), so its scores are not calibrated: they still rank "
            "data, but predicted losses are approximate. Refit the rule with `fit_rule` for these models.",
            UserWarning,
            stacklevel=stacklevel,
        )
    for model_id, folder in substituted.items():
        offline.log_substitution(model_id, folder)
    return indicators


def _check_model_keys(models: Mapping[str, str], specs: Mapping[str, Any], families: dict[str, str]) -> None:
    """Keys of `models` must name indicators; ones this plan does not compute are ignored with a warning, so a
    general mapping (such as `offline.offline_models()`) works with any rule."""
    needed = set(specs) | set(families.values())
    extra = sorted(set(models) - needed)
    wrong = [k for k in extra if k not in _FAMILIES and not is_indicator_column(k)]
    if wrong:
        known = sorted(needed) + [n for n in available_indicators() if n not in needed] + list(_FAMILIES)
        close = "".join(_close(k, known) for k in wrong)
        raise ValueError(
            f"`models=` has key(s) {wrong} that are not indicator columns or families{close}; the indicators "
            f"computed here are {sorted(needed)}."
        )
    if extra:
        logger.warning("`models=` names %s, which no indicator computed here uses: ignored.", extra)


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
    """The neighbour set of KNN indicators: a `Dataset` or embeddings as given, or the rows of a dataset file,
    folder or Hub id (its `train` split), read by [`~hf_instructmining.loading.load_rows`]."""
    if reference is None or not isinstance(reference, (str, os.PathLike)):
        return reference
    return load_rows(reference, argument="reference")
