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
        where = f"example {row} of this batch" if in_batch else f"row {row}"
        super().__init__(
            f"{where}: {reason}; columns seen: {self.columns}. Fix the data, pass `column_mapping=` to say which "
            'columns hold the instruction and the response, or pass `on_invalid="nan"` to score such rows as NaN.'
        )


class UnknownFormatError(ValueError):
    """Raised when a dataset's columns match none of the supported layouts (or several, ambiguously)."""

    def __init__(self, columns: Sequence[str], message: str):
        self.columns = list(columns)
        super().__init__(message)


class RuleFormatError(ValueError):
    """Raised when a quality rule (a JSON file or a dict) is malformed: the message says which field and why."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class HubUploadError(RuntimeError):
    """Raised when publishing to the Hub fails part-way; the local folder is complete and the message says how to resume.

    Attributes:
        repo_id (`str`): the repository that was being written.
        folder (`str`): the local folder that holds everything that was to be uploaded.
    """

    def __init__(self, message: str, *, repo_id: str, folder: str):
        self.repo_id = repo_id
        self.folder = folder
        super().__init__(message)


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
