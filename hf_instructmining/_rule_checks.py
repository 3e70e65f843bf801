"""Checks behind [`~hf_instructmining.QualityRule`]: field validation for rule files, and prediction inputs."""

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import RuleFormatError


logger = logging.getLogger(__name__)


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
    }


def _number(value: Any, what: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(f"{what} must be a number, got `{value!r}`")
    if not math.isfinite(value):
        raise fail(f"{what} must be finite, got `{value!r}`")
    return float(value)


def _column(column: Any, what: str, fail) -> str:
    if not isinstance(column, str):
        raise fail(f"{what} has a non-string column `{column!r}`")
    if not is_known_indicator(column):
        from .indicators import available_indicators

        raise fail(
            f"{what} names the unknown indicator column `{column}`; known indicators: {available_indicators()} "
            "(register others with `register_indicator`)"
        )
    return column


def is_known_indicator(column: str) -> bool:
    from .indicators import available_indicators

    for known in available_indicators():
        # Families are listed by pattern, e.g. `knn_{k}` for `knn_6`.
        pattern = re.escape(known).replace(re.escape("{k}"), "[1-9][0-9]*")
        if re.fullmatch(pattern, column):
            return True
    return False


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


def json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


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
