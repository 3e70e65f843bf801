"""Checks behind [`~hf_instructmining.QualityRule`]: reading and validating rule files, and prediction inputs."""

import inspect
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import RuleFormatError


logger = logging.getLogger(__name__)


# A rule is a few numbers and names: anything larger or deeper is not a rule file (and would cost memory or recursion).
MAX_RULE_BYTES = 10_000_000
MAX_NESTING = 64
_MAX_INT_DIGITS = 400  # past float's range (1.8e308) anyway; spares Python's slow and limited long-int parsing


# -- reading -----------------------------------------------------------------------------------------------------


def read_rule_json(path: str) -> Any:
    """The parsed JSON of a rule file; every way a file can fail to be one raises `RuleFormatError` naming it.

    Raises:
        `FileNotFoundError`: no such file.
        [`~hf_instructmining.errors.RuleFormatError`]: too large, binary (e.g. a pickle), not UTF-8, not JSON,
            a duplicate key, a number too long to be one, or nested deeper than a rule ever is.
    """

    def fail(message: str) -> RuleFormatError:
        return RuleFormatError(message, path=path)

    size = os.path.getsize(path)
    if size > MAX_RULE_BYTES:
        raise fail(f"the file is {size:,} bytes; a rule file is a small JSON object (at most {MAX_RULE_BYTES:,})")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\x80"):  # the PROTO opcode that starts every pickle of protocol 2 or later
        raise fail(
            "the file is a pickle, not JSON; rules are stored as JSON only, never pickle (loading one can run code): "
            "load the rule where it was made and save it with `QualityRule.save`"
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fail("the file is UTF-16 (or UTF-32) text; rule files are UTF-8 JSON: save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise fail(f"the file holds NUL bytes (the first at byte {nul}): it is binary, not JSON text")
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is harmless
    except UnicodeDecodeError as err:
        raise fail(f"not UTF-8 text ({err.reason} at byte {err.start}); rule files are UTF-8 JSON") from None
    if not text.strip():
        raise fail("not valid JSON (the file is empty)")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int)
    except RecursionError:
        raise fail(f"nests deeper than a JSON parser can follow; a rule nests at most {MAX_NESTING} levels") from None
    except ValueError as err:  # JSONDecodeError, or ours: a duplicate key, an overlong number
        raise fail(f"not valid JSON ({err})") from None
    if _too_deep(data):
        raise fail(f"nests more than {MAX_NESTING} levels deep; a rule nests at most {MAX_NESTING}")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        repeated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise ValueError(f"duplicate key(s) {repeated}: which value is meant is ambiguous")
    return data


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits, too large for any rule value")
    return int(digits)


def _too_deep(value: Any) -> bool:
    """Whether lists and objects nest more than `MAX_NESTING` levels in `value` (iteratively: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children and depth > MAX_NESTING:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# -- validation --------------------------------------------------------------------------------------------------


def validate_fields(data: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Check the fields shared by the constructor and JSON files; return them normalised (floats, copies)."""

    def fail(message: str) -> RuleFormatError:
        return RuleFormatError(message, path=source)

    intercept = _number(data["intercept"], "`intercept`", fail)
    coefficients = data["coefficients"]
    if not isinstance(coefficients, Mapping) or not coefficients:
        raise fail(f"`coefficients` must be a non-empty object of column -> number, got `{coefficients!r}`")
    coefficients = {
        _column(c, "`coefficients`", fail): _number(v, f"`coefficients.{c}`", fail) for c, v in coefficients.items()
    }
    indicators = data["indicators"]
    if not isinstance(indicators, Mapping):
        raise fail(f"`indicators` must be an object of column -> options, got `{type(indicators).__name__}`")
    missing = [c for c in coefficients if c not in indicators]
    if missing:
        raise fail(
            f"`indicators` has no spec for the column(s) {missing}; give each coefficient's options (`{{}}` for defaults)"
        )
    extra = [c for c in indicators if c not in coefficients]
    if extra:
        raise fail(f"`indicators` has spec(s) for {extra}, which have no coefficient")
    specs = {}
    for column in coefficients:
        spec = indicators[column]
        if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
            raise fail(f"`indicators.{column}` must be an object of option -> value, got `{spec!r}`")
        _json_value(spec, f"`indicators.{column}`", fail)
        _buildable(column, spec, fail)
        specs[column] = dict(spec)
    provenance = data.get("provenance")
    provenance = {} if provenance is None else provenance
    if not isinstance(provenance, Mapping):
        raise fail(f"`provenance` must be an object, got `{type(provenance).__name__}`")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise fail(f"`name` must be a string or null, got `{name!r}`")
    return {
        "intercept": intercept,
        "coefficients": coefficients,
        "indicators": specs,
        "provenance": dict(provenance),
        "name": name,
        "domain": _domain(data.get("domain"), coefficients, fail),
    }


def _domain(domain: Any, coefficients: Mapping[str, float], fail) -> dict[str, tuple[float, float]] | None:
    """`None`, or column -> `(low, high)` with finite `low <= high`, for columns the rule has coefficients for."""
    if domain is None:
        return None
    if not isinstance(domain, Mapping):
        raise fail(f"`domain` must be an object of column -> [low, high], or null; got `{type(domain).__name__}`")
    checked = {}
    for column, bounds in domain.items():
        if column not in coefficients:
            raise fail(f"`domain` has a range for `{column}`, which has no coefficient")
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise fail(f"`domain.{column}` must be [low, high], got `{bounds!r}`")
        low, high = (_number(b, f"`domain.{column}`", fail) for b in bounds)
        if low > high:
            raise fail(f"`domain.{column}` must be [low, high] with low <= high, got `{list(bounds)}`")
        checked[column] = (low, high)
    return checked


def _number(value: Any, what: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(f"{what} must be a number, got `{value!r}`")
    try:
        number = float(value)
    except OverflowError:
        raise fail(f"{what} is an integer too large for a float ({len(str(abs(value)))} digits)") from None
    if not math.isfinite(number):
        raise fail(f"{what} must be finite, got `{value!r}`")
    return number


def _buildable(column: str, spec: Mapping[str, Any], fail) -> None:
    """The options must build the indicator (cheap: models load on first use), so bad ones fail now, not mid-scoring."""
    from ..indicators import get_indicator

    try:
        get_indicator(column, **spec)
    except (TypeError, ValueError) as err:
        what = f"`indicators.{column}`: the options {dict(spec)} do not build the `{column}` indicator"
        if "unexpected keyword argument" not in str(err):
            raise fail(f"{what}: {err}") from None
        unknown = sorted(set(spec) - _options(column))
        raise fail(f"{what}, which takes no option {unknown}; its options are {sorted(_options(column))}") from None


def _options(column: str) -> set[str]:
    """The keyword options an indicator's class takes, through its constructors' `**kwargs` chain."""
    from ..indicators import get_indicator

    names: set[str] = set()
    for cls in type(get_indicator(column)).__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            names |= {
                p.name
                for p in inspect.signature(init).parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
    return names


def _column(column: Any, what: str, fail) -> str:
    if not isinstance(column, str):
        raise fail(f"{what} has a non-string column `{column!r}`")
    from ..indicators.registry import available_indicators, is_indicator_column

    if not is_indicator_column(column):
        raise fail(
            f"{what} names the unknown indicator column `{column}`; known indicators: {available_indicators()} "
            "(register others with `register_indicator`)"
        )
    return column


def _json_value(value: Any, what: str, fail) -> None:
    """Indicator options must be plain JSON (strings, finite numbers, booleans, null, lists, objects)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail(f"{what} must be finite, got `{value!r}`")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _json_value(item, f"{what}[{i}]", fail)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise fail(f"{what} has a non-string key `{key!r}`")
            _json_value(item, f"{what}.{key}", fail)
        return
    raise fail(f"{what} holds a `{type(value).__name__}`, which JSON cannot store")


# -- prediction helpers ------------------------------------------------------------------------------------------


def column_names(columns: Any) -> list[str]:
    if hasattr(columns, "column_names"):  # datasets.Dataset
        return list(columns.column_names)
    if hasattr(columns, "columns") and not isinstance(columns, Mapping):  # pandas.DataFrame
        return [str(c) for c in columns.columns]
    if isinstance(columns, Mapping):
        return list(columns)
    raise TypeError(
        f"`columns` must be a mapping of column -> values, a DataFrame or a Dataset, got {type(columns).__name__}."
    )


def as_floats(values: Any, column: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)  # None (a missing value) becomes NaN
    except (TypeError, ValueError):
        raise ValueError(f"The indicator column `{column}` holds non-numeric values.") from None
    if array.ndim > 1:
        raise ValueError(f"The indicator column `{column}` must be one value per row, got shape {array.shape}.")
    return np.atleast_1d(array)


def check_finite(array: np.ndarray, column: str, *, allow_nan: bool) -> None:
    infinite = np.flatnonzero(np.isinf(array))
    if infinite.size:
        raise ValueError(
            f"The indicator column `{column}` is infinite at row(s) {infinite[:10].tolist()}; a rule cannot score "
            "those rows. Check the indicator's model and inputs."
        )
    nan = np.flatnonzero(np.isnan(array))
    if nan.size and not allow_nan:
        raise ValueError(
            f"The indicator column `{column}` is NaN at row(s) {nan[:10].tolist()} (invalid rows?). Pass "
            "`allow_nan=True` to give those rows a NaN prediction."
        )
