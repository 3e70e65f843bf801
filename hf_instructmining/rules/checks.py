"""Checks behind [`~hf_instructmining.QualityRule`]: reading and validating rule files, and prediction inputs."""

import inspect
import json
import logging
import math
import os
import stat
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import RuleFormatError, shorten
from .scales import DEFAULT_OUT_OF_RANGE, OUT_OF_RANGE, TRANSFORMS


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
        [`~hf_instructmining.errors.RuleFormatError`]: not a regular file (a device, a pipe, a folder), too large,
            binary (e.g. a pickle), not UTF-8, not JSON, a duplicate key, a number too long to be one, or nested
            deeper than a rule ever is.
    """

    def fail(message: str) -> RuleFormatError:
        return RuleFormatError(message, path=path)

    raw = _read_bounded(path, fail)
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


# What a file that is not a regular file is, for the message that refuses it.
_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_bounded(path: str, fail) -> bytes:
    """The bytes of a regular file of at most `MAX_RULE_BYTES`, never reading more than one byte past that.

    The size a file reports bounds nothing: it is 0 for `/dev/zero` and for pipes, which read forever. Opening without
    blocking lets a named pipe with no writer be refused instead of waited on (no effect on regular files).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for is_kind, name in _FILE_KINDS if is_kind(mode)), "not a file")
            raise fail(f"not a regular file ({kind}); a rule is a small JSON file")
        with open(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_RULE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_RULE_BYTES:
        raise fail(f"the file holds more than {MAX_RULE_BYTES:,} bytes; a rule file is a small JSON object")
    return raw


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


def local_models_checked(data: Any, path: str) -> Any:
    """`data`, a rule read from the file `path`, with the models and tokenizers it names checked against its folder.

    A Hub id stays as it is. A folder inside the rule's own folder (written relative to it, or absolute) becomes its
    absolute path, so that it loads from any working directory. Any other local path raises: a rule file is data that
    anyone may publish, and a path outside its folder would load whatever the reader's machine holds there.

    Raises:
        [`~hf_instructmining.errors.RuleFormatError`]: names the field, the file and what to do instead.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("indicators"), Mapping):
        return data  # not a rule: `QualityRule.from_dict` says why
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    indicators = {}
    for column, spec in data["indicators"].items():
        if isinstance(spec, Mapping):
            spec = dict(spec)
            for option in _MODEL_OPTIONS:
                if isinstance(spec.get(option), str):
                    spec[option] = _model_in_folder(spec[option], folder, column, option, path)
        indicators[column] = spec
    return {**data, "indicators": indicators}


# The options that name what `from_pretrained` loads: a Hub id or a folder.
_MODEL_OPTIONS = ("model", "tokenizer")


def _model_in_folder(value: str, folder: str, column: Any, option: str, path: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
        return value
    except HFValidationError:
        pass  # not a Hub id, so a local path
    resolved = os.path.realpath(os.path.join(folder, value))  # an absolute `value` stays itself; links are followed
    if os.path.commonpath([resolved, folder]) == folder and os.path.isdir(resolved):
        return resolved
    column = shorten(column)
    raise RuleFormatError(
        f"`indicators.{column}.{option}` names `{shorten(value)}`, a local path outside the rule's folder (or missing "
        "from it): a rule file names its models by Hub id, or by a folder inside its own. Write the Hub id there and "
        f"pass your folder in your own call (`models={{'{column}': folder}}`, or `--models '{{\"{column}\": "
        '"folder"}\'` on the command line), or load a rule you made yourself with `allow_local_paths=True`',
        path=path,
    )


# -- validation --------------------------------------------------------------------------------------------------


def validate_fields(data: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Check the fields shared by the constructor and JSON files; return them normalised (floats, copies)."""

    def fail(message: str) -> RuleFormatError:
        return RuleFormatError(message, path=source)

    intercept = _number(data["intercept"], "`intercept`", fail)
    coefficients = data["coefficients"]
    if not isinstance(coefficients, Mapping) or not coefficients:
        raise fail(f"`coefficients` must be a non-empty object of column -> number, got `{shorten(coefficients)}`")
    coefficients = {
        _column(c, "`coefficients`", fail): _number(v, f"`coefficients.{c}`", fail) for c, v in coefficients.items()
    }
    indicators = data["indicators"]
    if not isinstance(indicators, Mapping):
        raise fail(f"`indicators` must be an object of column -> options, got `{type(indicators).__name__}`")
    missing = [c for c in coefficients if c not in indicators]
    if missing:
        raise fail(
            f"`indicators` has no spec for the column(s) {shorten(missing)}; give each coefficient's options (`{{}}` "
            "for defaults)"
        )
    extra = [c for c in indicators if c not in coefficients]
    if extra:
        raise fail(f"`indicators` has spec(s) for {shorten(extra)}, which have no coefficient")
    specs = {}
    for column in coefficients:
        spec = indicators[column]
        if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
            raise fail(f"`indicators.{column}` must be an object of option -> value, got `{shorten(spec)}`")
        _json_value(spec, f"`indicators.{column}`", fail)
        _rule_options(column, spec, fail)
        _buildable(column, spec, fail)
        specs[column] = dict(spec)
    provenance = data.get("provenance")
    provenance = {} if provenance is None else provenance
    if not isinstance(provenance, Mapping):
        raise fail(f"`provenance` must be an object, got `{type(provenance).__name__}`")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise fail(f"`name` must be a string or null, got `{shorten(repr(name))}`")
    return {
        "intercept": intercept,
        "coefficients": coefficients,
        "indicators": specs,
        "provenance": dict(provenance),
        "name": name,
        "domain": _domain(data.get("domain"), coefficients, fail),
        "out_of_range": _out_of_range(data.get("out_of_range", DEFAULT_OUT_OF_RANGE), fail),
        "transforms": _transforms(data.get("transforms"), coefficients, fail),
    }


def _out_of_range(policy: Any, fail) -> str:
    """One of the policies of `scales.OUT_OF_RANGE`; a file without the field reads as `"clip"` (as before it)."""
    if policy not in OUT_OF_RANGE:
        raise fail(f"`out_of_range` must be one of {list(OUT_OF_RANGE)}, got `{shorten(repr(policy))}`")
    return policy


def _transforms(transforms: Any, coefficients: Mapping[str, float], fail) -> dict[str, str]:
    """Column -> a transform of `scales.TRANSFORMS`, for columns the rule has coefficients for; `None` is none."""
    if transforms is None:
        return {}
    if not isinstance(transforms, Mapping):
        raise fail(f"`transforms` must be an object of column -> transform, got `{type(transforms).__name__}`")
    for column, name in transforms.items():
        if column not in coefficients:
            raise fail(f"`transforms` names `{shorten(column)}`, which has no coefficient")
        if not isinstance(name, str) or name not in TRANSFORMS:
            raise fail(f"`transforms.{column}` must be one of {sorted(TRANSFORMS)}, got `{shorten(repr(name))}`")
    return dict(transforms)


def _domain(domain: Any, coefficients: Mapping[str, float], fail) -> dict[str, tuple[float, float]] | None:
    """`None`, or column -> `(low, high)` with finite `low <= high`, for columns the rule has coefficients for."""
    if domain is None:
        return None
    if not isinstance(domain, Mapping):
        raise fail(f"`domain` must be an object of column -> [low, high], or null; got `{type(domain).__name__}`")
    checked = {}
    for column, bounds in domain.items():
        if column not in coefficients:
            raise fail(f"`domain` has a range for `{shorten(column)}`, which has no coefficient")
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise fail(f"`domain.{column}` must be [low, high], got `{shorten(bounds)}`")
        low, high = (_number(b, f"`domain.{column}`", fail) for b in bounds)
        if low > high:
            raise fail(f"`domain.{column}` must be [low, high] with low <= high, got `{list(bounds)}`")
        checked[column] = (low, high)
    return checked


def _number(value: Any, what: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(f"{what} must be a number, got `{shorten(value)}`")
    try:
        number = float(value)
    except OverflowError:
        raise fail(f"{what} is an integer too large for a float ({len(str(abs(value)))} digits)") from None
    if not math.isfinite(number):
        raise fail(f"{what} must be finite, got `{shorten(value)}`")
    return number


def _rule_options(column: str, spec: Mapping[str, Any], fail) -> None:
    """A rule sets only the options its indicator lists in `rule_options`: those that define the column's values.

    A rule is data that anyone may publish, so no option that loads or runs code (`trust_remote_code`), or that points
    the indicator at other files (`subfolder`, `gguf_file`, a `reference` set) or devices, may come from one: the
    caller passes those in their own call. An allow-list, so that an option added to an indicator later is refused
    until it is known to be safe in a rule.
    """
    from ..indicators import get_indicator

    try:
        cls = type(get_indicator(column))
    except (TypeError, ValueError) as err:  # e.g. `knn_100000000000`: the name itself asks for too much
        raise fail(
            f"`indicators.{column}`: the `{column}` indicator cannot be built: {shorten(str(err), 300)}"
        ) from None
    allowed = list(cls.rule_options)
    for option, value in spec.items():
        if option in allowed:
            continue
        if option not in _options(column):
            unknown = shorten(sorted(set(spec) - _options(column)))
            raise fail(
                f"`indicators.{column}`: the options {shorten(dict(spec))} do not build the `{column}` indicator, "
                f"which takes no option {unknown}; its options are {allowed}"
            )
        raise fail(
            f"`indicators.{column}.{option}` cannot come from a rule: a rule is data, and sets only the options that "
            f"define its column ({allowed}). Pass it in your own call instead, e.g. "
            f"`{cls.__name__}(..., {option}={shorten(value)})`"
            + (", for a model whose code you have read" if option == "trust_remote_code" else "")
        )


def _buildable(column: str, spec: Mapping[str, Any], fail) -> None:
    """The options must build the indicator (cheap: models load on first use), so bad ones fail now, not mid-scoring."""
    from ..indicators import get_indicator

    try:
        get_indicator(column, **spec)
    except (TypeError, ValueError) as err:
        raise fail(
            f"`indicators.{column}`: the options {shorten(dict(spec))} do not build the `{column}` indicator: "
            f"{shorten(str(err), limit=300)}"
        ) from None


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
        raise fail(f"{what} has a non-string column `{shorten(column)}`")
    from ..indicators.registry import available_indicators, is_indicator_column

    if not is_indicator_column(column):
        raise fail(
            f"{what} names the unknown indicator column `{shorten(column)}`; known indicators: "
            f"{available_indicators()} "
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
                raise fail(f"{what} has a non-string key `{shorten(key)}`")
            _json_value(item, f"{what}.{shorten(key)}", fail)
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
