"""Exceptions raised by hf-instructmining, each carrying the context needed to fix the input."""

from collections.abc import Sequence


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
            f"{where}: {reason}; columns seen: {self.columns}. Fix the data, pass `column_mapping=` to say which "
            'columns hold the instruction and the response, or pass `on_invalid="nan"` to score such rows as NaN.'
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


def _rebuild(cls: type, args: tuple, kwargs: dict) -> Exception:
    """Unpickle an error of this module (its `__init__` takes context arguments, not only the message)."""
    return cls(*args, **kwargs)
