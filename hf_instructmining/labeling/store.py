"""An append-only, crash-safe JSONL record of labelling runs: which subset, which model, which eval loss.

Each record is one JSON line, written with a single `os.write` on an `O_APPEND` descriptor and then flushed to
disk with `fsync`, under an exclusive `flock` so that writers in several processes never interleave. A killed
writer can leave at most one torn last line (no final newline); opening the store cuts it off, and readers never
parse a line that has no newline, so a later append always starts on a clean line.

A subset counts as finished only once its `"subset_done"` record exists (like datatrove's `completions/`
markers), so a re-run skips finished subsets and redoes the rest. Every attempt at a subset has its own
`run_id`: the views keep the records of the attempt that finished (or, while none has, of the latest attempt)
and hide the partial records of attempts that were interrupted, so a resumed run never shows duplicates.
"""

import fcntl
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping
from typing import Any


logger = logging.getLogger(__name__)

_KINDS_WITH_ATTEMPTS = ("train_begin", "eval", "subset_done")
_VERSIONED_LIBRARIES = ("hf-instructmining", "torch", "transformers", "trl", "peft", "datasets", "statsmodels")


def is_eval_loss(metric: str) -> bool:
    """Whether a Trainer metric is an eval loss the labelling loop records: `eval_loss`, or `eval_<name>_loss` for
    a named eval set."""
    return metric.startswith("eval") and metric.endswith("_loss")


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries that shape a label or a fit (`None` when not installed)."""
    import importlib.metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _VERSIONED_LIBRARIES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value`: NaN/inf become `None`, sets and tuples become lists, unknown objects `str`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):  # sorted: a set's order changes between processes
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return to_jsonable(value.item())
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ == "enum":
        return to_jsonable(value.value)
    return str(value)


class LabelStore:
    """Append-only, crash-safe JSONL store of labelling records.

    Every record is a dict with at least `"kind"` (`"train_begin"`, `"eval"`, `"subset_done"`, `"search_trial"`,
    ...), `"subset_id"` and `"timestamp"` (seconds since the epoch, added when missing).

    Args:
        path (`str` or `os.PathLike`): the `.jsonl` file; created (with its folder) when missing.

    Example:

    ```py
    >>> import tempfile, os
    >>> from hf_instructmining import LabelStore
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.jsonl"))
    >>> _ = store.append({"kind": "eval", "subset_id": "a", "run_id": "r1", "step": 4, "loss": 2.5})
    >>> _ = store.append({"kind": "subset_done", "subset_id": "a", "run_id": "r1", "eval_loss": 2.5})
    >>> store.is_finished("a"), store.is_finished("b")
    (True, False)
    >>> [r["loss"] for r in store.records("eval")]
    [2.5]
    ```
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"`LabelStore` needs a file path, got the folder `{self.path}`.")
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._repair()

    def __repr__(self) -> str:
        return f"LabelStore({self.path!r})"

    def __len__(self) -> int:
        return len(self._read())

    def _repair(self) -> None:
        """Cut off a torn last line left by a killed writer, so the next append starts on a clean line."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size == 0:
                return
            with open(fd, "rb", closefd=False) as f:
                f.seek(max(0, size - 1))
                if f.read(1) == b"\n":
                    return
                f.seek(0)
                data = f.read()
            keep = data.rfind(b"\n") + 1
            logger.warning(
                "%s: dropping a torn last record (%d bytes) left by an interrupted writer.", self.path, size - keep
            )
            os.ftruncate(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, record: Mapping[str, Any]) -> dict:
        """Append one record atomically and durably.

        Args:
            record (`Mapping[str, Any]`): needs `"kind"` and `"subset_id"`; `"timestamp"` is added when missing.
                Values are made JSON-safe (NaN becomes `null`).

        Returns:
            `dict`: the record as written.
        """
        if "kind" not in record or "subset_id" not in record:
            raise ValueError(f"A record needs `kind` and `subset_id`; got the keys {sorted(record)}.")
        written = to_jsonable({"timestamp": time.time(), **record})
        line = (json.dumps(written, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # One write of the whole line: with O_APPEND it lands after every earlier record, in one piece.
            if os.write(fd, line) != len(line):
                raise OSError(f"Short write to {self.path}; the store will drop the torn record when reopened.")
            os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def _read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                data = f.read()
        except FileNotFoundError:
            return []
        records = []
        # Only newline-terminated lines are complete; a trailing fragment is a write still in flight or torn.
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping unreadable line %d.", self.path, number)
        return records

    def records(self, kind: str | None = None, *, include_superseded: bool = False) -> list[dict]:
        """The records in file order, optionally of one kind.

        Args:
            kind (`str`, *optional*): keep only records of this kind.
            include_superseded (`bool`, *optional*, defaults to `False`): also return the records of interrupted
                attempts (those whose `run_id` is neither the finished attempt nor the latest one of their subset).

        Returns:
            `list[dict]`
        """
        records = self._read()
        if not include_superseded:
            current = _current_attempts(records)
            records = [
                r
                for r in records
                if r.get("kind") not in _KINDS_WITH_ATTEMPTS
                or "run_id" not in r
                or current.get(r.get("subset_id")) == r["run_id"]
            ]
            records = _first_done_only(records)
        return [r for r in records if kind is None or r.get("kind") == kind]

    def finished_subsets(self) -> set[str]:
        """The ids of subsets that have a `"subset_done"` record."""
        return {r["subset_id"] for r in self._read() if r.get("kind") == "subset_done"}

    def is_finished(self, subset_id: str) -> bool:
        """Whether `subset_id` has a `"subset_done"` record."""
        return subset_id in self.finished_subsets()

    def labels(self) -> list[dict]:
        """One flat row per finished subset, sorted by `subset_id`: its eval loss(es) and mean indicators.

        This is the table [`~hf_instructmining.fit_rule`] regresses: `subset_id`, `eval_loss`, every named eval
        loss, every generated-answer score (e.g. `eval_rougeL`, when labelled with `metrics=`), `num_train_rows`
        and one column per indicator mean.
        """
        rows = []
        for record in self.records("subset_done"):
            row = {"subset_id": record["subset_id"], "eval_loss": record.get("eval_loss")}
            row.update(record.get("eval_losses") or {})
            row.update(record.get("eval_scores") or {})
            row["num_train_rows"] = record.get("num_train_rows")
            row.update(record.get("indicator_means") or {})
            rows.append(row)
        return sorted(rows, key=lambda row: str(row["subset_id"]))

    def to_pandas(self, kind: str | None = None):
        """The records as a `pandas.DataFrame` (nested values stay Python objects).

        Args:
            kind (`str`, *optional*): keep only records of this kind.
        """
        import pandas as pd

        return pd.DataFrame(self.records(kind))

    def to_dataset(self, kind: str | None = None):
        """The records as a `datasets.Dataset`; nested values (configs, compositions) become JSON strings.

        Args:
            kind (`str`, *optional*): keep only records of this kind.
        """
        import datasets

        rows = self.records(kind)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        nested = {c for c in columns for row in rows if isinstance(row.get(c), dict | list)}
        table = {c: [json.dumps(row[c]) if c in nested and c in row else row.get(c) for row in rows] for c in columns}
        return datasets.Dataset.from_dict(table)


def _current_attempts(records: list[dict]) -> dict[str, str]:
    """subset_id -> the run_id that counts: the first finished attempt, else the latest attempt seen."""
    latest: dict[str, str] = {}
    finished: dict[str, str] = {}
    for r in records:
        if r.get("kind") not in _KINDS_WITH_ATTEMPTS or "run_id" not in r:
            continue
        latest[r["subset_id"]] = r["run_id"]
        if r["kind"] == "subset_done":
            finished.setdefault(r["subset_id"], r["run_id"])
    return {**latest, **finished}


def _first_done_only(records: list[dict]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for r in records:
        if r.get("kind") == "subset_done":
            if r.get("subset_id") in seen:
                continue
            seen.add(r.get("subset_id"))
        kept.append(r)
    return kept
