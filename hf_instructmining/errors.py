"""Exceptions raised by hf-instructmining, each carrying the context needed to fix the input."""

import traceback
from collections.abc import Sequence
from typing import Any


# Request headers that carry credentials (httpx and requests headers are case-insensitive mappings).
_SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")
REDACTED = "[removed by hf-instructmining]"
# What an error message echoes of a user's name or value: enough to recognise it, never megabytes of it.
_ECHO_CHARS = 60
_ECHO_ITEMS = 20


def shorten(value: Any, limit: int = _ECHO_CHARS) -> str:
    """A user-supplied name or value as an error message echoes it: whole when short, cut with its length when long.

    A string longer than `limit` (60) characters keeps its first `limit` and says how long it was; a list or tuple
    shows at most 20 items (each shortened) and how many more there are; anything else is shortened as its `repr`.

    Example:

    ```py
    >>> from hf_instructmining.errors import shorten
    >>> shorten("output"), shorten("a" * 100)
    ('output', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa… (100 chars)')
    >>> shorten(["instruction", "b" * 70])
    "['instruction', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb…' (70 chars)]"
    ```
    """
    if isinstance(value, (list, tuple)):
        items = [_quoted(item, limit) for item in value[:_ECHO_ITEMS]]
        if len(value) > _ECHO_ITEMS:
            items.append(f"… ({len(value) - _ECHO_ITEMS:,} more)")
        return f"[{', '.join(items)}]"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


def _quoted(item: Any, limit: int) -> str:
    """One list item as `repr` shows it, cut like [`shorten`] (`'abc…' (1,048,576 chars)`)."""
    text = item if isinstance(item, str) else repr(item)
    if len(text) <= limit:
        return repr(item)
    cut = repr(text[:limit] + "…") if isinstance(item, str) else text[:limit] + "…"
    return f"{cut} ({len(text):,} chars)"


class InvalidExampleError(ValueError):
    """Raised when an example matches no known layout, or its response is missing, empty or not text.

    Attributes:
        row (`int`): index of the offending example (within the dataset when known, else within the batch).
        columns (`list[str]`): the columns that the example had.
        reason (`str`): what is wrong with it.
    """

    def __init__(self, row: int, columns: Sequence[str], reason: str, *, in_batch: bool = False):
        self.row = row
        self.columns = list(columns)
        self.reason = reason
        self.in_batch = in_batch
        where = f"example {row} of this batch" if in_batch else f"row {row}"
        super().__init__(
            f"{where}: {reason}; columns seen: {shorten(self.columns)}. Fix the data, pass `column_mapping=` to say "
            'which columns hold the instruction and the response, or pass `on_invalid="nan"` to score such rows as NaN.'
        )

    def __reduce__(self):
        # Rebuilt from its context, not from the message: `Dataset.map(num_proc=n)` sends it from a worker process.
        return _rebuild, (type(self), (self.row, self.columns, self.reason), {"in_batch": self.in_batch})


class UnknownFormatError(ValueError):
    """Raised when a dataset's columns match none of the supported layouts (or several, ambiguously)."""

    def __init__(self, columns: Sequence[str], message: str):
        self.columns = list(columns)
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return _rebuild, (type(self), (self.columns, self.message), {})


class RuleFormatError(ValueError):
    """Raised when a quality rule (a JSON file or a dict) is malformed: the message says which field and why."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def __reduce__(self):
        return _rebuild, (type(self), (self.message,), {"path": self.path})


class HubUploadError(RuntimeError):
    """Raised when publishing to the Hub fails part-way; the local folder is complete and the message says how to resume.

    Attributes:
        repo_id (`str`): the repository that was being written.
        folder (`str`): the local folder that holds everything that was to be uploaded.
    """

    def __init__(self, message: str, *, repo_id: str, folder: str):
        self.repo_id = repo_id
        self.folder = folder
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return _rebuild, (type(self), (self.message,), {"repo_id": self.repo_id, "folder": self.folder})


def remove_token(err: BaseException, token: Any = None) -> None:
    """Take Hub credentials out of an exception and every exception it chains to (`__cause__`, `__context__`).

    Blanks the credential headers of the HTTP requests they hold (`err.response.request.headers`, `err.request`),
    replaces the token wherever it appears in their messages, and clears the local variables of their finished
    frames (an HTTP client's frames hold the request headers). Frames still running when it is called, such as
    those of the calls that were handed `token=`, keep their variables.

    Args:
        err (`BaseException`): the exception about to be raised or re-raised.
        token (`str` or `bool`, *optional*): the `token=` the Hub call was given; the token it stands for (the
            stored one for `None`) is also removed from messages.
    """
    secret = token_in_use(token)
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for holder in (current, getattr(current, "response", None)):
            try:
                request = getattr(holder, "request", None)
            except RuntimeError:  # an httpx response built without its request
                request = None
            headers = getattr(request, "headers", None)
            for name in _SECRET_HEADERS:
                if headers is not None and name in headers:
                    headers[name] = REDACTED
        if secret:
            current.args = tuple(a.replace(secret, REDACTED) if isinstance(a, str) else a for a in current.args)
        traceback.clear_frames(current.__traceback__)  # skips the frames still running
        pending += [current.__cause__, current.__context__]


def token_in_use(token: str | bool | None) -> str | None:
    """The token `huggingface_hub` sends for a `token=` argument: itself, none for `False`, the stored one for `None`."""
    if isinstance(token, str) or token is False:
        return token or None
    from huggingface_hub import get_token

    return get_token()


def _rebuild(cls: type, args: tuple, kwargs: dict) -> Exception:
    """Unpickle an error of this module (its `__init__` takes context arguments, not only the message)."""
    return cls(*args, **kwargs)


class ScoreProvenanceError(ValueError):
    """Raised when the rule given to publish scores did not make them, so a card would misstate how they were made.

    Attributes:
        rule (`str`): the rule given (its name, or its formula when unnamed).
        recorded (`str`, *optional*): the rule stored with the data as the one that made the scores, if any.
        reason (`str`): how the scores and the rule disagree.
    """

    def __init__(self, rule: str, reason: str, *, recorded: str | None = None, score_column: str = "instruct_score"):
        self.rule = rule
        self.recorded = recorded
        self.reason = reason
        keep = f", leave out `rule=` to record `{recorded}` (stored with the data)" if recorded else ""
        super().__init__(
            f"`{score_column}` was not made by the rule `{rule}`: {reason}. Pass the rule that made the scores"
            f"{keep}, or score again with this rule: `compute_indicators(ds, rule=rule)`."
        )
