"""Turn examples in any common layout into (instruction, response) text pairs.

Three layouts are detected from the column names (DESIGN.md, "Input formats"):

- **alpaca**: `instruction`, optional `input`, `output`. The instruction text is `instruction + "\\n\\n" + input`
  when `input` is non-empty.
- **prompt_completion** (TRL): `prompt` and `completion`, both strings, or both conversational lists of
  `{"role", "content"}` messages.
- **messages** (TRL conversational): `messages`, a list of `{"role", "content"}`. The response is the last
  assistant turn; the instruction is every turn before it.

A `column_mapping` such as `{"instruction": "question", "output": "answer"}` says which dataset column plays
which role, and overrides detection. Examples may come one at a time (`Dataset.map`) or as a batch
(`Dataset.map(batched=True)`); both give the same pairs.

Nothing is dropped silently: a row that fits no layout, or whose response is missing, empty or not text,
raises an [`~hf_instructmining.errors.InvalidExampleError`] naming the row and the columns seen
(`on_invalid="raise"`, the default), or is marked invalid so that indicators write NaN (`on_invalid="nan"`).
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidExampleError, UnknownFormatError, shorten


logger = logging.getLogger(__name__)

FORMATS = ("alpaca", "prompt_completion", "messages")
ROLES = ("instruction", "input", "output", "prompt", "completion", "messages")
OnInvalid = Literal["raise", "nan"]

# The columns that make each layout, in the order detection tries them.
_REQUIRED = {
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
}


@dataclass
class InstructionPairs:
    """Instruction/response pairs extracted from one example or one batch.

    Args:
        instructions (`list[str]`): the instruction text of each row (`""` for invalid rows).
        responses (`list[str]`): the response text of each row (`""` for invalid rows).
        prompts (`list[list[dict]]`): each row's instruction as chat messages (for chat templates).
        valid (`list[bool]`): whether each row could be read.
        errors (`list[str | None]`): why a row is invalid, `None` for valid rows.
        batched (`bool`): whether the input was a batch (dict of lists) or a single example.
        format (`str`): the layout that was used.
    """

    instructions: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    prompts: list[list[dict]] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    batched: bool = True
    format: str = "alpaca"

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def num_invalid(self) -> int:
        return self.valid.count(False)

    def select_valid(self) -> "InstructionPairs":
        """The valid rows only, in order (indicators compute on these, then NaN-fill the rest)."""
        keep = [i for i, ok in enumerate(self.valid) if ok]
        return InstructionPairs(
            instructions=[self.instructions[i] for i in keep],
            responses=[self.responses[i] for i in keep],
            prompts=[self.prompts[i] for i in keep],
            valid=[True] * len(keep),
            errors=[None] * len(keep),
            batched=True,
            format=self.format,
        )


def detect_format(columns: Sequence[str], column_mapping: Mapping[str, str] | None = None) -> str:
    """Detect the layout of a dataset from its column names.

    Args:
        columns (`Sequence[str]`): the dataset's column names.
        column_mapping (`Mapping[str, str]`, *optional*): role -> column, e.g. `{"output": "answer"}`.

    Returns:
        `str`: one of `"alpaca"`, `"prompt_completion"`, `"messages"`.

    Raises:
        `UnknownFormatError`: when the columns fit no layout, or fit several.

    Example:

    ```py
    >>> from hf_instructmining.formats import detect_format
    >>> detect_format(["instruction", "input", "output"])
    'alpaca'
    >>> detect_format(["question", "answer"], column_mapping={"instruction": "question", "output": "answer"})
    'alpaca'
    ```
    """
    mapping = _validate_mapping(column_mapping)
    present = set(columns)
    roles = {role for role in ROLES if mapping.get(role, role) in present}
    mapped_roles = set(mapping)
    matches = [fmt for fmt, needed in _REQUIRED.items() if all(r in roles for r in needed)]
    if len(matches) > 1 and mapped_roles:
        # A mapping is an explicit statement of intent: prefer the layouts it mentions.
        matches = [fmt for fmt in matches if mapped_roles & set(_REQUIRED[fmt])] or matches
    if len(matches) == 1:
        return matches[0]
    absent = sorted({column for column in mapping.values() if column not in present})
    if not matches and absent:
        raise UnknownFormatError(
            columns,
            f"`column_mapping=` names column(s) {shorten(absent)} that are not in the dataset; its columns are "
            f"{shorten(sorted(present))}.",
        )
    if not matches:
        raise UnknownFormatError(
            columns,
            f"The columns {shorten(sorted(present))} match no known layout. Expected `instruction`/`output` "
            "(Alpaca), `prompt`/`completion` (TRL) or `messages` (TRL chat); pass `column_mapping=` such as "
            '`{"instruction": "question", "output": "answer"}` to name yours.',
        )
    raise UnknownFormatError(
        columns,
        f"The columns {shorten(sorted(present))} match several layouts {matches}; pass `format=` (one of "
        f"{list(FORMATS)}) to choose.",
    )


def extract_pairs(
    examples: Mapping[str, Any],
    *,
    format: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    on_invalid: OnInvalid = "raise",
    indices: Sequence[int] | int | None = None,
) -> InstructionPairs:
    """Read (instruction, response) pairs from one example or a batch, in any supported layout.

    Args:
        examples (`Mapping[str, Any]`): one example (column -> value) or a batch (column -> list of values), as
            `Dataset.map` passes them.
        format (`str`, *optional*): force a layout instead of detecting it.
        column_mapping (`Mapping[str, str]`, *optional*): role -> column name.
        on_invalid (`str`, *optional*, defaults to `"raise"`): `"raise"` raises on the first invalid row;
            `"nan"` marks it invalid (indicators then write NaN) and logs a warning.
        indices (`Sequence[int]` or `int`, *optional*): dataset row indices, used in error messages.

    Returns:
        [`InstructionPairs`]

    Raises:
        `InvalidExampleError`: an invalid row with `on_invalid="raise"`.
        `UnknownFormatError`: the columns fit no layout.

    Example:

    ```py
    >>> from hf_instructmining.formats import extract_pairs
    >>> pairs = extract_pairs({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    >>> pairs.instructions, pairs.responses, pairs.batched
    (['Add 2 and 3.'], ['5'], False)
    >>> chat = {"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]}
    >>> extract_pairs(chat).responses
    ['Hello!']
    ```
    """
    check_examples(examples)
    if on_invalid not in ("raise", "nan"):
        raise ValueError(f"`on_invalid` must be `'raise'` or `'nan'`, got `{on_invalid!r}`.")
    mapping = _validate_mapping(column_mapping)
    columns = list(examples.keys())
    fmt = format or detect_format(columns, mapping)
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format `{fmt!r}`; expected one of {list(FORMATS)}.")
    missing = [mapping.get(r, r) for r in _REQUIRED[fmt] if mapping.get(r, r) not in examples]
    if missing:
        raise UnknownFormatError(
            columns,
            f"Format `{fmt}` needs the column(s) {shorten(missing)}, but the columns are {shorten(sorted(columns))}; "
            "pass `column_mapping=` to name the columns that play those roles.",
        )

    def col(role: str) -> Any:
        return examples.get(mapping.get(role, role))

    key_value = col(_REQUIRED[fmt][-1])
    # One int index is what `Dataset.map` passes with one example: then it is one, whatever its values look like
    # (an empty `messages` list would otherwise read as an empty batch).
    batched = not isinstance(indices, int) and _looks_batched(fmt, key_value, [col(r) for r in _REQUIRED[fmt]])
    if batched:
        n = len(key_value)
        rows = [{role: _at(col(role), i) for role in ROLES} for i in range(n)]
    else:
        rows = [{role: col(role) for role in ROLES}]

    if indices is None:
        row_ids, in_batch = list(range(len(rows))), True
    else:
        row_ids = [indices] if isinstance(indices, int) else list(indices)
        in_batch = False

    reader = _READERS[fmt]
    pairs = InstructionPairs(batched=batched, format=fmt)
    for row_id, row in zip(row_ids, rows, strict=True):
        try:
            instruction, response, prompt = reader(row)
        except _RowError as err:
            if on_invalid == "raise":
                raise InvalidExampleError(row_id, columns, str(err), in_batch=in_batch) from None
            pairs.instructions.append("")
            pairs.responses.append("")
            pairs.prompts.append([])
            pairs.valid.append(False)
            pairs.errors.append(str(err))
            continue
        pairs.instructions.append(instruction)
        pairs.responses.append(response)
        pairs.prompts.append(prompt)
        pairs.valid.append(True)
        pairs.errors.append(None)
    if pairs.num_invalid:
        first = next(i for i, e in enumerate(pairs.errors) if e)
        logger.warning(
            "%d of %d examples are invalid and will be scored as NaN (first: %s: %s).",
            pairs.num_invalid,
            len(pairs),
            f"example {first} of this batch" if in_batch else f"row {row_ids[first]}",
            pairs.errors[first],
        )
    return pairs


def check_examples(examples: Any) -> None:
    """Refuse what is neither one example nor a batch, saying what a `map` function takes.

    Raises:
        `TypeError`: `examples` is not a mapping of column -> value(s).
    """
    if not isinstance(examples, Mapping):
        raise TypeError(
            'Expected one example (a dict of column -> value, e.g. `{"instruction": ..., "output": ...}`) or a '
            "batch (a dict of column -> list of values), as `Dataset.map` passes them; got "
            f"`{type(examples).__name__}`. Score a dataset with `ds.map(...)`."
        )


class _RowError(Exception):
    """Internal: why one row cannot be read; turned into `InvalidExampleError` or a NaN row."""


def _validate_mapping(column_mapping: Mapping[str, str] | None) -> dict[str, str]:
    if column_mapping is None:
        return {}
    if not isinstance(column_mapping, Mapping):
        raise TypeError(f"`column_mapping` must be a dict of role -> column, got {type(column_mapping).__name__}.")
    unknown = sorted(set(column_mapping) - set(ROLES))
    if unknown:
        raise ValueError(f"`column_mapping` has unknown role(s) {shorten(unknown)}; the roles are {list(ROLES)}.")
    return dict(column_mapping)


def _looks_batched(fmt: str, key_value: Any, required_values: list[Any]) -> bool:
    """A batch is a dict of lists; a single conversational example is a list of message dicts."""
    if not isinstance(key_value, list):
        return False
    if not key_value:
        # Ambiguous only for conversational values: an empty batch has every required column empty.
        return all(isinstance(v, list) and not v for v in required_values)
    first = key_value[0]
    if fmt == "messages" or (fmt == "prompt_completion" and isinstance(first, dict)):
        return not isinstance(first, dict)
    # A batch has a list in every column; one example whose response is a list is one bad example.
    return all(isinstance(v, list) for v in required_values)


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) else None


def _text(value: Any, what: str, *, allow_empty: bool) -> str:
    if value is None:
        raise _RowError(f"the {what} is missing")
    if not isinstance(value, str):
        raise _RowError(f"the {what} is not text (got `{type(value).__name__}`)")
    if not allow_empty and not value.strip():
        raise _RowError(f"the {what} is empty")
    return value


def _read_alpaca(row: dict) -> tuple[str, str, list[dict]]:
    instruction = _text(row["instruction"], "instruction", allow_empty=True)
    extra = "" if row["input"] is None else _text(row["input"], "input", allow_empty=True)
    response = _text(row["output"], "response (`output`)", allow_empty=False)
    if extra.strip():
        instruction = f"{instruction}\n\n{extra}"
    return instruction, response, [{"role": "user", "content": instruction}]


def _check_messages(messages: Any, what: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise _RowError(f"`{what}` is not a non-empty list of messages")
    for turn in messages:
        if isinstance(turn, dict) and "from" in turn and "value" in turn:
            raise _RowError(
                f"`{what}` has ShareGPT turns (`from`/`value`), not `{{role, content}}` dicts: rename each turn's "
                f"`from` to `role` and `value` to `content`, and the roles as {_SHAREGPT_ROLES}"
            )
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise _RowError(f"`{what}` has a turn that is not a `{{role, content}}` dict")
        if not isinstance(turn["content"], str):
            raise _RowError(f"`{what}` has a turn whose content is not text")
    return messages


# How ShareGPT's roles map to the chat roles, for the messages that meet them.
_SHAREGPT_ROLES = "`human` -> `user`, `gpt` -> `assistant` (ShareGPT's names)"


def _split_chat(messages: list[dict], what: str) -> tuple[str, str, list[dict]]:
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        roles = shorten(list(dict.fromkeys(str(m["role"]) for m in messages)))
        raise _RowError(
            f"`{what}` has no assistant turn (roles seen: {roles}); the response is the last turn whose role is "
            f"`assistant`: rename the roles first, e.g. {_SHAREGPT_ROLES}"
        )
    response = _text(messages[last]["content"], "response (last assistant turn)", allow_empty=False)
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    instruction = "\n\n".join(m["content"] for m in prompt)
    return instruction, response, prompt


def _read_prompt_completion(row: dict) -> tuple[str, str, list[dict]]:
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        prompt = _check_messages(prompt, "prompt")
        completion = _check_messages(completion, "completion")
        if not any(m["role"] == "assistant" for m in completion):
            raise _RowError("`completion` has no assistant turn")
        return _split_chat(prompt + completion, "prompt + completion")
    instruction = _text(prompt, "prompt", allow_empty=True)
    response = _text(completion, "response (`completion`)", allow_empty=False)
    return instruction, response, [{"role": "user", "content": instruction}]


def _read_messages(row: dict) -> tuple[str, str, list[dict]]:
    return _split_chat(_check_messages(row["messages"], "messages"), "messages")


_READERS = {"alpaca": _read_alpaca, "prompt_completion": _read_prompt_completion, "messages": _read_messages}
