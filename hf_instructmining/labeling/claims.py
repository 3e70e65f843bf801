"""Claims on subsets: workers that share one `LabelStore` label each subset once, and take over from dead ones.

Before it trains a subset, a worker claims it: under the store's lock it checks that the subset is neither finished
nor held by a live claim, and appends a `"claim"` record (`action: "take"`) with a fresh `claim_id`, its host,
process id and lease. While it trains, a thread renews the claim (`action: "renew"`) every third of the lease. A
worker whose training fails releases its claim (`action: "release"`), so that another can start on it at once.

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
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .store import RECORD_FIELDS, LabelStore


logger = logging.getLogger(__name__)

#: Seconds a claim lasts without renewal. Renewals come every third of it while training runs, so only a worker that
#: is gone (or frozen) lets it run out; a dead worker's subset waits this long when it was on another machine.
DEFAULT_LEASE_S = 300.0
CLAIM_KIND = "claim"
# The longest wait between two looks at the store while other workers hold the remaining subsets.
_MAX_POLL_S = 10.0
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
    """Hold a claim while a block runs: renew it in a thread, and release it if the block raises.

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
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
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
                logger.warning(
                    "The claim on subset %s ran out (no renewal for %.0f s) and another worker took the subset "
                    "over; both will label it, and the first label written counts. Raise the lease if this worker "
                    "was only slow.",
                    self.claim.subset_id,
                    self.claim.lease_s,
                )
                return


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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # Fields after the parenthesised command name: state is the 3rd field of the line, start time the 22nd.
            fields = f.read().rsplit(b")", 1)[1].split()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):  # exited, waiting to be reaped
        return None
    return f"{namespace} {fields[19].decode()}"
