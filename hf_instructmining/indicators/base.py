"""The base class every indicator derives from: a `Dataset.map` function with a cheap, exact fingerprint.

An indicator reads (instruction, response) pairs from any layout (see [`~hf_instructmining.formats`]),
computes its float column(s) on the valid rows, and writes NaN on rows that `on_invalid="nan"` let through.
Subclasses implement one method, `compute(pairs, device)`, on valid rows only.

Map arguments: `Dataset.map` calls `fn(examples, *([indices] if with_indices), *([rank] if with_rank))`, so one
extra integer is an index under `with_indices=True` and a rank under `with_rank=True`. [`map_arguments`] tells them
apart, and finds the dataset rows of the examples when `map` did not pass them, so that errors name the dataset row.

Fingerprints: `Dataset.map` hashes the function with dill. `__getstate__` keeps only the configuration and the
class `version` (bump it whenever the output of an indicator changes), never a loaded model or tokenizer, so
hashing is cheap, stable before and after the first call, and caching works across calls and processes.
"""

import logging
import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import shorten
from ..formats import FORMATS, InstructionPairs, OnInvalid, extract_pairs


logger = logging.getLogger(__name__)

# A branch, tag or commit as the Hub names them (`main`, `v1.0`, `refs/pr/1`, a commit hash). `huggingface_hub` writes
# a downloaded revision's name under its cache's `refs/` folder, so a name that climbs out (`../..`) is refused.
_REVISION = re.compile(r"(?!/)(?!.*(?:\.\.|//|@\{))[\w.+@/-]{1,255}(?<!/)")


class Indicator:
    """A natural-language indicator of instruction-data quality, usable directly as a `Dataset.map` function.

    Args:
        format (`str`, *optional*): force the input layout (`"alpaca"`, `"prompt_completion"`, `"messages"`)
            instead of detecting it from the columns.
        column_mapping (`dict[str, str]`, *optional*): role -> column, e.g. `{"output": "answer"}`.
        on_invalid (`str`, *optional*, defaults to `"raise"`): what to do with a row whose response is missing,
            empty or not text: `"raise"` an error naming the row, or write `"nan"`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining.indicators import OutputLength
    >>> ds = Dataset.from_dict({"instruction": ["Say hi", "Count"], "output": ["Hello there", "one two three"]})
    >>> list(ds.map(OutputLength(), batched=True)["output_length"])
    [2.0, 3.0]
    ```
    """

    #: Registry name and output column of the indicator (families such as KNN override `columns`).
    name: ClassVar[str] = ""
    #: Bump when the values an indicator computes change, so `Dataset.map` caches are invalidated.
    version: ClassVar[str] = "1"
    #: Instance attributes that hold loaded state and never enter pickles or fingerprints.
    _transient: ClassVar[tuple[str, ...]] = ()
    #: The options a rule's spec may set: those that define the column's values (model id, revision, `k`, ...),
    #: never one that loads or runs code (`trust_remote_code`), picks a place to run (`device`) or reads other data
    #: (`reference`). A rule file is data that anyone may publish; the caller sets the rest in their own call.
    rule_options: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        format: str | None = None,
        column_mapping: Mapping[str, str] | None = None,
        on_invalid: OnInvalid = "raise",
    ):
        if format is not None and format not in FORMATS:
            raise ValueError(f"Unknown format `{format!r}`; expected one of {list(FORMATS)}.")
        if on_invalid not in ("raise", "nan"):
            raise ValueError(f"`on_invalid` must be `'raise'` or `'nan'`, got `{on_invalid!r}`.")
        self.format = format
        self.column_mapping = dict(column_mapping) if column_mapping else None
        self.on_invalid = on_invalid

    @property
    def columns(self) -> tuple[str, ...]:
        """The column(s) this indicator writes."""
        return (self.name,)

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, Sequence[float]]:
        """Compute the indicator's column(s) for valid pairs; one float per pair, in order."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The options that rebuild this indicator with `get_indicator(column, **spec)`, recorded in rules."""
        return {}

    def __call__(
        self,
        examples: Mapping[str, Any],
        *map_args: Any,
        indices: Sequence[int] | int | None = None,
        rank: int | None = None,
    ) -> dict[str, Any]:
        """Score one example or a batch; returns only this indicator's column(s), one value per row.

        Takes what `Dataset.map` passes with `with_indices=True` and/or `with_rank=True` after the examples (see
        [`map_arguments`]); an invalid row's error names its dataset row either way.
        """
        indices, rank = map_arguments(map_args, indices=indices, rank=rank)
        return self.process_pairs(self.read_pairs(examples, indices=indices), rank=rank)

    def read_pairs(
        self, examples: Mapping[str, Any], *, indices: Sequence[int] | int | None = None
    ) -> InstructionPairs:
        """Parse one example or a batch with this indicator's input options (layout, mapping, invalid-row policy)."""
        return extract_pairs(
            examples,
            format=self.format,
            column_mapping=self.column_mapping,
            on_invalid=self.on_invalid,
            indices=indices,
        )

    def process_pairs(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, Any]:
        """This indicator's column(s) for pairs already parsed (see [`compute_all`]), NaN on invalid rows."""
        return self._finish(pairs, self._compute_valid(pairs, rank))

    def _compute_valid(self, pairs: InstructionPairs, rank: int | None) -> dict[str, list[float]]:
        """Compute on the valid rows and put NaN on the invalid ones, keeping row order."""
        values: dict[str, list[float]] = {c: [math.nan] * len(pairs) for c in self.columns}
        if pairs.num_invalid == len(pairs):
            return values
        valid = pairs if pairs.num_invalid == 0 else pairs.select_valid()
        computed = self.compute(valid, rank=rank)
        positions = [i for i, ok in enumerate(pairs.valid) if ok]
        for column in self.columns:
            column_values = computed[column]
            if len(column_values) != len(positions):
                raise RuntimeError(
                    f"{type(self).__name__} returned {len(column_values)} values for {len(positions)} rows."
                )
            for i, value in zip(positions, column_values, strict=True):
                values[column][i] = float(value)
        return values

    @staticmethod
    def _finish(pairs: InstructionPairs, values: dict[str, list[float]]) -> dict[str, Any]:
        if pairs.batched:
            return values
        return {column: column_values[0] for column, column_values in values.items()}

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._transient}
        state["_indicator_version"] = self.version
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.pop("_indicator_version", None)
        self.__dict__.update(state)
        for attribute in self._transient:
            self.__dict__.setdefault(attribute, None)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.spec().items())
        return f"{type(self).__name__}({options})"


def check_revision(revision: Any) -> None:
    """Refuse a `revision` that is not a branch, tag or commit name (`None` is the default branch).

    Raises:
        `TypeError`: not a string.
        `ValueError`: not a name a Hub revision can have (e.g. `../x`, a space, `//`).

    Example:

    ```py
    >>> from hf_instructmining.indicators.base import check_revision
    >>> check_revision("refs/pr/1"), check_revision(None)
    (None, None)
    ```
    """
    if revision is None:
        return
    if not isinstance(revision, str):
        raise TypeError(f"`revision` must be a branch, tag or commit (a string), got {type(revision).__name__}.")
    if not _REVISION.fullmatch(revision):
        raise ValueError(
            f"`revision` must be a branch, tag or commit name such as `main`, `v1.0` or `refs/pr/1`, got "
            f"`{shorten(revision)}`."
        )


def map_arguments(
    map_args: tuple, *, indices: Sequence[int] | int | None = None, rank: int | None = None
) -> tuple[Sequence[int] | int | None, int | None]:
    """The dataset row indices and the worker rank of a `map` function's call, from its extra positional arguments.

    `Dataset.map` passes `indices` (a list when batched, an int otherwise) with `with_indices=True`, then `rank`
    with `with_rank=True`. A single extra integer is ambiguous: inside `Dataset.map` the call's own settings say
    which it is; called directly, `fn(example, 3)` means rank 3, as it always has. Without indices, the rows come
    from the running `Dataset.map` call (its shard offset included, under `num_proc`), or stay unknown outside one.

    Args:
        map_args (`tuple`): the positional arguments after the examples.
        indices (`list[int]` or `int`, *optional*): the rows, when given by keyword.
        rank (`int`, *optional*): the worker rank, when given by keyword.

    Returns:
        `tuple`: `(indices, rank)`, each `None` when unknown.

    Example:

    ```py
    >>> from hf_instructmining.indicators.base import map_arguments
    >>> map_arguments(([4, 5], 1)), map_arguments(([4, 5],)), map_arguments((1,))
    (([4, 5], 1), ([4, 5], None), (None, 1))
    ```
    """
    if len(map_args) > 2:
        raise TypeError(
            f"A map function takes the examples, then the indices and the rank as `Dataset.map(with_indices=True, "
            f"with_rank=True)` passes them; got {len(map_args)} extra arguments."
        )
    if len(map_args) == 2:
        indices, rank = map_args
    elif map_args:
        (value,) = map_args
        if not isinstance(value, int) or isinstance(value, bool):
            indices = value  # a batch's list of indices: a rank is always an int
        elif _running_map(settings=True).get("with_indices_only"):
            indices = value
        else:
            rank = value
    if indices is None:
        indices = _running_map(settings=False).get("rows")
    return indices, rank


def _running_map(*, settings: bool) -> dict[str, Any]:
    """What the `Dataset.map` call running this function passes, read from its frames (datasets passes no offset to
    the function itself): `rows`, the dataset rows of this call, and with `settings`, `with_indices_only`. Empty
    when the function is not called by `Dataset.map`. Only `settings` reads the map call's own frame, the costlier
    look, so a plain call pays for two small frames."""
    frame = sys._getframe(1)
    found: dict[str, Any] = {}
    for _ in range(12):  # map function <- apply_function <- iter_outputs <- _map_single, plus our own callers
        if frame is None:
            return {}
        if frame.f_globals.get("__name__") == "datasets.arrow_dataset":
            if frame.f_code.co_name == "apply_function":
                local = frame.f_locals
                shard, offset = local.get("indices"), local.get("offset") or 0
                if isinstance(shard, int):
                    found["rows"] = shard + offset
                elif isinstance(shard, list):
                    found["rows"] = [i + offset for i in shard]
                if not settings:
                    return found
            elif frame.f_code.co_name == "_map_single":
                local = frame.f_locals
                found["with_indices_only"] = bool(local.get("with_indices")) and not local.get("with_rank")
                return found
        frame = frame.f_back
    return {}


def compute_all(
    indicators: Sequence[Indicator],
    examples: Mapping[str, Any],
    *,
    indices: Sequence[int] | int | None = None,
    rank: int | None = None,
) -> dict[str, Any]:
    """Run several indicators on one example or batch, parsing it once per distinct set of input options.

    A scorer's indicators share their input options, so the batch is read into pairs once instead of once per
    indicator (and an invalid row is reported once).
    """
    values: dict[str, Any] = {}
    parsed: dict[tuple, InstructionPairs] = {}
    for indicator in indicators:
        mapping = tuple(sorted((indicator.column_mapping or {}).items()))
        key = (indicator.format, mapping, indicator.on_invalid)
        if key not in parsed:
            parsed[key] = indicator.read_pairs(examples, indices=indices)
        values.update(indicator.process_pairs(parsed[key], rank=rank))
    return values
