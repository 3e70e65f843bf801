"""Claims on subsets: workers that share one `LabelStore` label each subset once, and take over from dead ones.

Before it trains a subset, a worker claims it: under the store's lock it checks that the subset is neither finished
nor held by a live claim, and appends a `"claim"` record (`action: "take"`) with a fresh `claim_id`, its host,
process id and lease. While it trains, a thread and a small renewal process renew the claim (`action: "renew"`)
every third of the lease: the process goes on through a training step that holds the GIL for longer than the lease
(a C call that never releases it stops every thread of the worker), for as long as the worker runs and is not
stopped (SIGSTOP). A worker whose training fails releases its claim (`action: "release"`), so that another can
start on it at once.

A claim is dead, and the next worker takes the subset over, when
- its process is gone: it ran on this host (in this PID namespace) and no longer exists or is a zombie, e.g. after a
  SIGKILL or an out-of-memory kill. Seen at once, on Linux also when the process id was reused since.
- its lease ran out: no renewal for `lease_s` seconds. This is how a worker on another machine is known to be gone
  (a lost node, a frozen process), so the machines' clocks must agree to well within the lease (NTP does).

Every runner (`run_labeling`, its one-process-per-device mode, and `run_labeling_with_ray`) works through
[`claim_each`], so any mix of them, on one machine or several sharing a file system, shares the work.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import store as _store
from .store import RECORD_FIELDS, LabelStore


logger = logging.getLogger(__name__)

#: Seconds a claim lasts without renewal. Renewals come every third of it while training runs, so only a worker that
#: is gone (or frozen) lets it run out; a dead worker's subset waits this long when it was on another machine.
DEFAULT_LEASE_S = 300.0
CLAIM_KIND = "claim"
# The longest wait between two looks at the store while other workers hold the remaining subsets.
_MAX_POLL_S = 10.0
# The renewal process's exit code when another worker took the claim over.
_LOST = 3
_RENEWER = "from hf_instructmining.labeling.claims import _renewal_process; _renewal_process()"
# A claim's liveness is read from its timestamp and lease: a claim record without them is skipped on read.
RECORD_FIELDS[CLAIM_KIND] = {
    "action": "text",
    "claim_id": "text",
    "timestamp": "number",
    "lease_s": "number",
    "host": "text?",
    "pid": "integer?",
    "process": "text?",
}


@dataclass(frozen=True)
class Claim:
    """One worker's claim on one subset (see the module docstring)."""

    subset_id: str
    claim_id: str
    lease_s: float


def claim_each(
    store: LabelStore,
    subset_ids: Iterable[str],
    *,
    lease_s: float = DEFAULT_LEASE_S,
    stop: Any = None,
) -> Iterator[Claim]:
    """Claim the unfinished subsets one after another, in order, until every one of them is finished.

    Each claim is taken only when the caller asks for the next one, so the list of what is left is read again after
    every subset: subsets that other workers finished meanwhile are skipped. When the only unfinished subsets are
    held by live workers, it waits for them to finish, or to die and leave their subset to this worker.

    Args:
        store ([`LabelStore`]): the store every worker shares.
        subset_ids (`Iterable[str]`): the subsets to label, in the order to try them.
        lease_s (`float`, *optional*, defaults to `300.0`): how long each claim lasts without renewal.
        stop (`threading.Event`, *optional*): when set, no further subset is claimed (any object with `is_set()`
            and `wait(timeout)` works).

    Yields:
        [`Claim`]: the next subset this worker labels; hold it with [`Lease`] while training.
    """
    ids = list(subset_ids)
    check_lease(lease_s)
    poll_s = poll_interval(lease_s)
    waiting_for: list[str] = []
    while stop is None or not stop.is_set():
        claim, busy = claim_next(store, ids, lease_s=lease_s)
        if claim is not None:
            yield claim
            continue
        if not busy:
            return
        if busy != waiting_for:
            logger.info("Waiting for %d subset(s) that other workers are labelling: %s", len(busy), busy[:5])
            waiting_for = busy
        if stop is not None:
            stop.wait(poll_s)
        else:
            time.sleep(poll_s)


def claim_next(store: LabelStore, subset_ids: Iterable[str], *, lease_s: float = DEFAULT_LEASE_S):
    """Claim the first of `subset_ids` that is neither finished nor held by a live claim.

    Returns:
        `tuple[Claim | None, list[str]]`: the new claim (`None` when no subset is free), and the unfinished subsets
        that live workers hold.
    """
    check_lease(lease_s)
    with store.locked() as (records, append):
        now = time.time()
        free, busy, holders = _split(records, subset_ids, now)
        if not free:
            return None, busy
        holder = holders.get(free[0])
        if holder is not None:
            logger.warning(
                "Taking over subset %s from worker %s (pid %s), which %s.",
                free[0],
                holder.get("host"),
                holder.get("pid"),
                "is gone" if _is_gone(holder) else f"has not renewed its claim for {now - holder['timestamp']:.0f} s",
            )
        claim = Claim(free[0], uuid.uuid4().hex, float(lease_s))
        append(_record(claim, "take"))
        return claim, busy


def free_subsets(store: LabelStore, subset_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """The unfinished subsets among `subset_ids`, split into those free to claim and those live workers hold."""
    free, busy, _ = _split(store.records(include_superseded=True), subset_ids, time.time())
    return free, busy


def renew(store: LabelStore, claim: Claim) -> bool:
    """Renew `claim`; `False` (and nothing written) when another worker has taken the subset over since."""
    with store.locked() as (records, append):
        holder = _holders(records).get(claim.subset_id)
        if holder is None or holder.get("claim_id") != claim.claim_id:
            return False
        append(_record(claim, "renew"))
        return True


def release(store: LabelStore, claim: Claim) -> None:
    """Give `claim` up, so that another worker may take its subset at once (nothing happens if it was taken over)."""
    with store.locked() as (records, append):
        holder = _holders(records).get(claim.subset_id)
        if holder is not None and holder.get("claim_id") == claim.claim_id:
            append(_record(claim, "release"))


class Lease:
    """Hold a claim while a block runs: renew it in a thread and a renewal process, and release it if the block raises.

    The renewal process keeps the claim through steps that hold the GIL for longer than the lease, which stop the
    thread; it renews only while this process runs and is not stopped, and ends with the block (or with this
    process). Where the store has no file lock between processes (no `fcntl`), the thread renews alone.

    Args:
        store ([`LabelStore`]): the store the claim is in.
        claim ([`Claim`]): the claim to keep alive.

    Example:

    ```py
    >>> import os, tempfile
    >>> from hf_instructmining import LabelStore
    >>> from hf_instructmining.labeling.claims import Lease, claim_each
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.jsonl"))
    >>> for claim in claim_each(store, ["a", "b"]):
    ...     with Lease(store, claim):  # train here
    ...         _ = store.append({"kind": "subset_done", "subset_id": claim.subset_id})
    >>> sorted(store.finished_subsets())
    ['a', 'b']
    ```
    """

    def __init__(self, store: LabelStore, claim: Claim):
        self.store = store
        self.claim = claim
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{claim.subset_id}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        self._process = _start_renewal_process(self.store, self.claim)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if self._process is not None and _stop_renewal_process(self._process) and not self.lost:
            self.lost = True
            _warn_lost(self.claim)
        if exc_type is not None:
            try:
                release(self.store, self.claim)
            except OSError as err:  # the store is unreachable: the lease will run out instead
                logger.warning("Could not release the claim on subset %s: %s", self.claim.subset_id, err)

    def _renew(self) -> None:
        while not self._stop.wait(self.claim.lease_s / 3):
            try:
                renewed = renew(self.store, self.claim)
            except OSError as err:  # e.g. a network file system hiccup: try again at the next renewal
                logger.warning("Could not renew the claim on subset %s: %s", self.claim.subset_id, err)
                continue
            if not renewed:
                self.lost = True
                _warn_lost(self.claim)
                return


def _warn_lost(claim: Claim) -> None:
    logger.warning(
        "The claim on subset %s ran out (no renewal for %.0f s) and another worker took the subset over; both will "
        "label it, and the first label written counts. Raise the lease if this worker was only slow.",
        claim.subset_id,
        claim.lease_s,
    )


def _start_renewal_process(store: LabelStore, claim: Claim) -> subprocess.Popen | None:
    """Start the process that renews `claim` while this one runs; `None` where it cannot share the store's lock."""
    if _store.fcntl is None or not sys.executable:
        return None
    # The package this module came from, for a child whose `sys.path` would not find it (a script run from elsewhere).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    args = [os.path.abspath(store.path), claim.subset_id, claim.claim_id, repr(claim.lease_s), str(os.getpid())]
    try:
        # Its stdin is the signal to stop: it reads end-of-file when the block ends, or when this process dies.
        return subprocess.Popen(
            [sys.executable, "-c", _RENEWER, *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
    except OSError as err:
        logger.warning(
            "Could not start the process that renews the claim on subset %s (%s); only a thread renews it, and a "
            "step that holds the GIL for longer than the lease (%.0f s) would lose it.",
            claim.subset_id,
            err,
            claim.lease_s,
        )
        return None


def _stop_renewal_process(process: subprocess.Popen) -> bool:
    """End the renewal process; whether it found the claim taken over."""
    process.stdin.close()
    try:
        process.wait(timeout=60)  # at most one renewal in flight, waiting for the store's lock
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode == _LOST


def _renewal_process() -> None:
    """The renewal process's main: renew a claim every third of its lease while the worker that holds it runs.

    Arguments (`sys.argv`): the store's path, the subset id, the claim id, the lease and the worker's process id.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, whose block then ends this process
    path, subset_id, claim_id, lease_s, pid = sys.argv[1:6]
    claim, pid = Claim(subset_id, claim_id, float(lease_s)), int(pid)
    tag = _process_tag(pid)
    store = LabelStore(path)
    ended = threading.Event()

    def wait_for_end() -> None:
        sys.stdin.buffer.read()  # returns at end-of-file: the block ended, or the worker is gone
        ended.set()

    threading.Thread(target=wait_for_end, daemon=True).start()
    while not ended.wait(claim.lease_s / 3):
        if (tag is not None and _process_tag(pid) != tag) or (tag is None and process_is_gone(pid)):
            return  # the worker is gone (a process that kept its stdin open, e.g. a forked child, outlived it)
        if _process_state(pid) in ("T", "t"):
            continue  # a stopped worker holds no live claim: its lease runs out unless it is resumed
        try:
            if not renew(store, claim):
                sys.exit(_LOST)
        except OSError as err:
            logger.warning("Could not renew the claim on subset %s: %s", claim.subset_id, err)


def poll_interval(lease_s: float) -> float:
    """Seconds between two looks at the store while waiting for subsets that other workers hold."""
    return min(lease_s / 3, _MAX_POLL_S)


def check_lease(lease_s: float) -> None:
    """Refuse a lease that is not a positive number of seconds."""
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not lease_s > 0:
        raise ValueError(f"The claim lease must be a positive number of seconds, got `{lease_s!r}`.")


def _record(claim: Claim, action: str) -> dict:
    return {
        "kind": CLAIM_KIND,
        "subset_id": claim.subset_id,
        "action": action,
        "claim_id": claim.claim_id,
        "lease_s": claim.lease_s,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process": _process_tag(os.getpid()),
    }


def _split(records: list[dict], subset_ids: Iterable[str], now: float):
    """`(free, busy, holders)`: the unfinished subsets free to claim and those live claims hold, in order, and the
    current claim of every subset."""
    finished = {r.get("subset_id") for r in records if r.get("kind") == "subset_done"}
    holders = _holders(records)
    free, busy = [], []
    for subset_id in subset_ids:
        if subset_id not in finished:
            holder = holders.get(subset_id)
            (busy if holder is not None and _is_live(holder, now) else free).append(subset_id)
    return free, busy, holders


def _holders(records: list[dict]) -> dict[str, dict]:
    """subset_id -> the latest record of the claim that holds it (released claims hold nothing)."""
    holders: dict[str, dict] = {}
    for r in records:
        if r.get("kind") != CLAIM_KIND:
            continue
        subset_id, action = r.get("subset_id"), r.get("action")
        current = holders.get(subset_id)
        if action == "take":
            holders[subset_id] = r
        elif current is not None and current.get("claim_id") == r.get("claim_id"):
            if action == "renew":
                holders[subset_id] = r
            elif action == "release":
                del holders[subset_id]
    return holders


def _is_live(holder: dict, now: float) -> bool:
    return now - holder.get("timestamp", 0.0) <= holder.get("lease_s", DEFAULT_LEASE_S) and not _is_gone(holder)


def _is_gone(holder: dict) -> bool:
    """Whether the claim's process provably no longer runs; `False` whenever this process cannot tell."""
    if holder.get("host") != socket.gethostname():
        return False
    pid, tag = holder.get("pid"), holder.get("process")
    if tag is not None:  # Linux: compare PID namespace and start time, so a reused pid does not count as alive
        own = _process_tag(os.getpid())
        if own is None or own.split(" ")[0] != tag.split(" ")[0]:
            return False  # another container with the same host name: its processes are not visible here
        return _process_tag(pid) != tag
    return isinstance(pid, int) and process_is_gone(pid)


def process_is_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this host (a zombie counts as gone); `False` where this cannot be told."""
    if os.name != "posix":
        return False  # on Windows `os.kill` would terminate the process, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return os.path.isdir("/proc/self") and _process_tag(pid) is None


def _process_tag(pid: int) -> str | None:
    """`"<PID namespace> <start time>"` of a running process on Linux, `None` when it is gone or a zombie, or when
    the system has no `/proc`."""
    fields = _stat(pid)
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if fields is None or fields[0] in (b"Z", b"X"):  # exited, waiting to be reaped
        return None
    return f"{namespace} {fields[19].decode()}"


def _process_state(pid: int) -> str | None:
    """The state letter of a process on Linux (`"T"`: stopped), `None` when it cannot be read."""
    fields = _stat(pid)
    return None if fields is None else fields[0].decode()


def _stat(pid: int) -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` after the parenthesised command name (state first, start time 20th)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
