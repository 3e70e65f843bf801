"""An append-only, crash-safe JSONL record of labelling runs: which subset, which model, which eval loss.

Each record is one JSON line, written with a single `os.write` on an `O_APPEND` descriptor and then flushed to
disk with `fsync`, under an exclusive OS file lock so that writers in several processes, or on several machines
sharing the file system, never interleave. The lock is `fcntl.flock` on POSIX systems (on NFS, Linux turns it
into a byte-range lock that the server shares between clients); where there is no `fcntl` (Windows) the lock
only holds between the threads of one process, and the store warns once that one process at a time must write it.

A writer that failed or was killed mid-write can leave at most one torn last line (no final newline). Every
writer cuts such a fragment off, under the lock, before it writes, so its own record always starts on a clean
line, even when it opened the store before the fragment appeared; readers skip it. A last line that is a whole
JSON object but lacks its newline (a file edited by hand, or copied by a tool that drops it) is no fragment: it is
read, and a writer adds the newline.

Every record read is checked against the fields its readers rely on (`RECORD_FIELDS`); one of another shape, like a
line that is not JSON, is skipped with one warning naming the file and the line, so it never stops the store. A
store that this process cannot write (a read-only file, folder or mount) opens for reading only, and so does
`LabelStore(path, readonly=True)`.

A subset counts as finished only once its `"subset_done"` record exists (like datatrove's `completions/`
markers), so a re-run skips finished subsets and redoes the rest. Every attempt at a subset has its own
`run_id`: the views keep the records of the attempt that finished (or, while none has, of the latest attempt)
and hide the partial records of attempts that were interrupted, so a resumed run never shows duplicates.
"""

import errno
import json
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .._json import to_jsonable
from ..errors import shorten


try:
    import fcntl
except ImportError:  # Windows: no advisory file locks in the standard library
    fcntl = None


logger = logging.getLogger(__name__)

_KINDS_WITH_ATTEMPTS = ("train_begin", "eval", "subset_done")
# Where `fcntl` is missing, one lock per process stands in for the file lock (see the module docstring).
_PROCESS_LOCK = threading.Lock()
_TAIL_CHUNK = 1 << 16
_VERSIONED_LIBRARIES = ("hf-instructmining", "torch", "transformers", "trl", "peft", "datasets", "statsmodels")
# What `open` raises where this process may read the store but not write it.
_READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)

# The JSON types a record's fields are checked against: a test and the words an error message uses.
_TYPES = {
    "text": (lambda value: isinstance(value, str), "a string"),
    "integer": (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
    "number": (
        lambda value: isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "a finite number",
    ),
    "object": (lambda value: isinstance(value, dict), "a JSON object"),
}
_COMMON_FIELDS = {"kind": "text", "subset_id": "text", "timestamp": "number?"}
#: kind -> field -> JSON type (`"?"`: may be missing or null): the fields that the readers of each kind of record
#: rely on, besides `kind`, `subset_id` and `timestamp`. The modules that write other kinds add theirs here
#: (`claims.py`, `search/trials.py`).
RECORD_FIELDS: dict[str, dict[str, str]] = {
    "train_begin": {"run_id": "text?"},
    "eval": {"run_id": "text?", "step": "integer?", "loss": "number?"},
    "subset_done": {
        "run_id": "text?",
        "eval_loss": "number?",
        "eval_losses": "object?",
        "eval_scores": "object?",
        "indicator_means": "object?",
        "num_train_rows": "integer?",
    },
}


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


class LabelStore:
    """Append-only, crash-safe JSONL store of labelling records.

    Every record is a dict with at least `"kind"` (`"train_begin"`, `"eval"`, `"subset_done"`, `"search_trial"`,
    ...), `"subset_id"` and `"timestamp"` (seconds since the epoch, added when missing).

    Args:
        path (`str` or `os.PathLike`): the `.jsonl` file; created (with its folder) when missing.
        readonly (`bool`, *optional*, defaults to `False`): only read the store: it is never created, repaired or
            appended to. A store that this process cannot write (a read-only file, folder or mount) opens this way
            by itself.

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

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"`LabelStore` needs a file path, got the folder `{self.path}`.")
        self._unreadable: set[int] = set()  # line numbers already warned about
        self.readonly = readonly
        self._read_only_reason = "it was opened with `readonly=True`"
        if readonly:
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._repair()
        except OSError as error:
            if error.errno not in _READ_ONLY_ERRORS:
                raise
            # Reading must not need write access: a store shared read-only, or on a read-only mount, is still read.
            self.readonly = True
            self._read_only_reason = f"this process cannot write it ({error.strerror})"
            logger.info("%s: %s; opened for reading only.", self.path, self._read_only_reason)

    def __repr__(self) -> str:
        return f"LabelStore({self.path!r}{', readonly=True' if self.readonly else ''})"

    def __len__(self) -> int:
        return len(self._read())

    def _repair(self) -> None:
        """Cut off a torn last line left by an interrupted writer (or end a whole one with its newline), so that the
        file ends on a clean line."""
        with self._lock(os.O_RDWR | os.O_CREAT, exclusive=True):
            pass

    @contextmanager
    def _lock(self, flags: int, *, exclusive: bool) -> Iterator[int]:
        """Open the file and hold its lock for the block; an exclusive holder first mends the last line."""
        if exclusive and self.readonly:
            raise PermissionError(
                f"{self.path} is open read-only: {self._read_only_reason}, so no record can be appended. Open it "
                "where this process can write it, or copy it to a writable place."
            )
        fd = os.open(self.path, flags, 0o644)
        try:
            if fcntl is None:
                _warn_process_lock_only()
                with _PROCESS_LOCK:
                    if exclusive:
                        self._mend_tail(fd)
                    yield fd
                return
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if exclusive:
                self._mend_tail(fd)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _mend_tail(self, fd: int) -> None:
        """End the file on a newline: cut off a torn last line, or add the newline a whole last record lacks.

        Every writer writes whole lines under the exclusive lock, so while this writer holds it a fragment without a
        newline can only be left by one that failed or died, or by an edit outside the store. Only a fragment that
        does not parse is torn: a prefix of a record is never a whole JSON object, as the object closes last."""
        size = os.fstat(fd).st_size
        if size == 0 or _read_at(fd, size - 1, 1) == b"\n":
            return
        keep = 0
        end = size
        while end > 0:  # search backwards: the fragment is one record, the file may be large
            start = max(0, end - _TAIL_CHUNK)
            newline = _read_at(fd, start, end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        if _whole_record(_read_at(fd, keep, size - keep)):
            os.pwrite(fd, b"\n", size)
            os.fsync(fd)
            logger.info("%s: added the newline that its last record lacked.", self.path)
            return
        logger.warning(
            "%s: dropping a torn last record (%d bytes) left by an interrupted writer.", self.path, size - keep
        )
        os.ftruncate(fd, keep)
        os.fsync(fd)

    def append(self, record: Mapping[str, Any]) -> dict:
        """Append one record atomically and durably.

        Args:
            record (`Mapping[str, Any]`): needs `"kind"` and `"subset_id"`; `"timestamp"` is added when missing.
                Values are made JSON-safe (NaN becomes `null`).

        Returns:
            `dict`: the record as written.
        """
        with self._lock(os.O_RDWR | os.O_APPEND | os.O_CREAT, exclusive=True) as fd:
            return self._write(fd, record)

    @contextmanager
    def locked(self) -> Iterator[tuple[list[dict], Callable[[Mapping[str, Any]], dict]]]:
        """Hold the store's exclusive lock for a read-then-write step that no other writer may interleave with.

        Yields `(records, append)`: every complete record now in the file (superseded ones included), and a function
        that appends one record like [`LabelStore.append`]. Other writers wait until the block ends, so keep it short.
        Subset claims (see `hf_instructmining.labeling.claims`) are made this way.
        """
        with self._lock(os.O_RDWR | os.O_APPEND | os.O_CREAT, exclusive=True) as fd:
            yield self._parse(_read_at(fd, 0, os.fstat(fd).st_size)), lambda record: self._write(fd, record)

    def _write(self, fd: int, record: Mapping[str, Any]) -> dict:
        if "kind" not in record or "subset_id" not in record:
            raise ValueError(f"A record needs `kind` and `subset_id`; got the keys {sorted(record)}.")
        written = to_jsonable({"timestamp": time.time(), **record})
        problem = record_problem(written)
        if problem is not None:  # refused here, since every reader would skip it
            raise ValueError(f"Not a valid `{shorten(repr(written['kind']))}` record: {problem}.")
        line = (json.dumps(written, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
        end = os.fstat(fd).st_size
        try:
            # One write of the whole line: with O_APPEND it lands after every earlier record, in one piece.
            if os.write(fd, line) != len(line):
                raise OSError(f"Short write to {self.path} (is the disk full?); the record was not stored.")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, end)  # take back a partial line, so that no reader or writer ever sees it
            raise
        return written

    def _read(self) -> list[dict]:
        try:
            with self._lock(os.O_RDONLY, exclusive=False) as fd:
                data = _read_at(fd, 0, os.fstat(fd).st_size)
        except FileNotFoundError:
            return []
        return self._parse(data)

    def _parse(self, data: bytes) -> list[dict]:
        records = []
        lines = data.split(b"\n")
        # Readers hold the shared lock, so no write is in flight: a last line without its newline is either torn
        # (skipped, and cut by the next writer) or a whole record (read; the next writer adds the newline).
        if not _whole_record(lines[-1]):
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                problem = "not a JSON object"
            else:
                problem = record_problem(record)
            if problem is None:
                records.append(record)
            elif number not in self._unreadable:
                self._unreadable.add(number)
                logger.warning(
                    "%s: skipping line %d (%s); the other records are read as usual. Fix or delete that line.",
                    self.path,
                    number,
                    problem,
                )
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


def record_problem(record: Any) -> str | None:
    """What makes `record` unfit for the store's readers (see `RECORD_FIELDS`), or `None` when it is fit."""
    if not isinstance(record, dict):
        return "not a JSON object"
    fields = _COMMON_FIELDS
    if isinstance(record.get("kind"), str):
        fields = {**fields, **RECORD_FIELDS.get(record["kind"], {})}
    for name, spec in fields.items():
        value = record.get(name)
        if value is None:
            if spec.endswith("?"):
                continue
            return f"`{name}` is {'null' if name in record else 'missing'}"
        check, expected = _TYPES[spec.rstrip("?")]
        if not check(value):
            return f"`{name}` is `{shorten(repr(value))}`, not {expected}"
    return None


def _whole_record(line: bytes) -> bool:
    """Whether a line parses as one JSON object (a record, whatever its fields)."""
    if not line.strip():
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return False


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """`size` bytes from `offset` (appends still go to the end: the descriptor is `O_APPEND`)."""
    os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


_warned_process_lock_only = False


def _warn_process_lock_only() -> None:
    global _warned_process_lock_only
    if not _warned_process_lock_only:
        _warned_process_lock_only = True
        logger.warning(
            "This platform has no `fcntl` file locks: a LabelStore is safe for the threads of one process only. "
            "Label with one process per store here, or on a POSIX system to share one store between processes."
        )


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
