"""Running a subset-size search: the loop that runs its trials, and the history that persists and reloads them.

[`~hf_instructmining.search_subset_size`] sets a search up; this module runs it. `TrialLoop` keeps up to n trials
running (in the calling thread when n is 1) and reports each loss to the searcher (`strategy.py`) as it
comes. `History` numbers, persists and reloads the trials. A stopped search resumes by replay: its searcher is
built again from the same seed and fed its own stored trials in the order it proposed them, without running
them, so it proposes what the uninterrupted search would have; trials of other searches over the same data (another
range, another configuration) warm-start it instead.
"""

import concurrent.futures
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..labeling.store import RECORD_FIELDS
from .result import SELECTIONS, SearchResult


if TYPE_CHECKING:
    from .config import SearchConfig
    from .strategy import SizeSpace


logger = logging.getLogger(__name__)

TRIAL_KIND = "search_trial"
# The settings that decide which sizes a search proposes: a stored trial whose settings (and range) match this
# search's is one of its own and is replayed; any other trial of the same search id warm-starts it.
PROPOSAL_FIELDS = ("method", "log_scale", "resolution", "initial_sizes", "seed")
# What a search reads from its stored trials: a trial record without them is skipped on read.
RECORD_FIELDS[TRIAL_KIND] = {
    "search_id": "text",
    "trial": "integer",
    "k": "integer",
    "loss": "number?",
    "time_s": "number",
    "selection": "text",
    "low": "integer?",
    "high": "integer?",
    "search_config": "object?",
}


class _Diverged(Exception):
    """The searcher proposed something other than the next stored trial of its own search."""


class TrialLoop:
    """Keeps up to `workers` trials running: sizes from the searcher and their random twins, each recorded as it ends.

    Trials run in worker threads; the store, the history and the searcher are touched only by the calling thread,
    between completions. With one worker this is the sequential search in the calling thread: propose, run, report,
    run the twin.

    The searcher comes from `make_searcher(warm)`, warm-started from other searches' trials. While this search's
    own stored trials are left to replay, every proposal must be the next of them (or a size already known), and
    gets its stored loss without running; if the searcher proposes anything else (the trials were run several at
    a time, or by another version), it is built again, warm-started from every finished trial, and the search
    goes on from there.
    """

    def __init__(
        self, make_searcher, sizes: "SizeSpace", history: "History", trial, random_baseline: bool, workers: int
    ):
        self.make_searcher, self.sizes, self.history, self.trial = make_searcher, sizes, history, trial
        self.searcher = make_searcher(history.warm)
        self.script = list(history.replay)
        self.unreplayed = {id(record) for record in self.script}
        self.random_baseline, self.workers = random_baseline, workers
        self.running: dict[concurrent.futures.Future, tuple[int, str]] = {}
        # A rule size in flight -> the searcher's trials waiting for its loss: a size is never run twice at once,
        # so a second proposal of a running size waits for the first one's result.
        self.waiting: dict[int, list[tuple[str, dict]]] = {}
        self.twins: list[int] = []  # sizes whose random twin is due, first come first started
        self.twinned: set[int] = set()
        self.proposing = True
        self.empty = self.suggestions = 0

    def run(self, num_samples: int | None, deadline: float) -> None:
        failure = None
        if self.workers == 1:
            pool = _InlineExecutor()
        else:
            pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="search-trial")
        try:
            while True:
                while failure is None and len(self.running) < self.workers and time.monotonic() < deadline:
                    if not self._start_next(pool, num_samples):
                        break
                if not self.running:
                    break
                done: set = set()
                while not done:
                    # A wait with a timeout: a SIGINT that the OS handed to a trial's thread is only seen when the
                    # calling thread wakes up, and an endless wait would never wake for it.
                    done, _ = concurrent.futures.wait(self.running, 0.2, concurrent.futures.FIRST_COMPLETED)
                for future in [f for f in self.running if f in done]:  # submission order: reproducible records
                    error = self._finish(future)
                    failure = failure or error
                # A finished trial can open sizes that the searcher could not propose while it was running.
                self.empty = 0
        except BaseException:
            # Ctrl-C (or a failure here) returns at once instead of waiting for the trials in flight: a thread
            # cannot be stopped, but no new trial starts, and a finetuning trial keeps its own run in the store.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if failure is not None:
            raise failure

    def _start_next(self, pool, num_samples: int | None) -> bool:
        """Start a due random twin, or ask the searcher for a size; `False` when nothing can start for now."""
        if self.twins:
            self._submit(pool, self.twins.pop(0), "random")
            return True
        if not self.proposing:
            return False
        planned = len(self.history.finished("rule")) + len(self.waiting)
        if num_samples is not None and planned >= num_samples:
            return self._stop_proposing()
        if planned >= self.sizes.count:
            logger.info(
                "Search %s: every candidate size in [%d, %d] has been tried.",
                self.history.search_id,
                self.history.low,
                self.history.high,
            )
            return self._stop_proposing()
        if self.empty >= self.searcher.max_empty:
            if self.running:
                return False
            logger.info("Search %s: the searcher has nothing new to propose; stopping.", self.history.search_id)
            return self._stop_proposing()
        trial_id = f"{self.history.search_id}-{self.suggestions}"
        self.suggestions += 1
        point = self.searcher.suggest(trial_id)
        if point is None:
            self.empty += 1
            return True
        self.empty = 0
        k = self.sizes.to_k(point)
        record = self.history.get(k, "rule")
        if self.script and not self._replays(record):
            logger.info(
                "Search %s: the searcher proposed k=%d where its stored trial %d has k=%d (trials run several at a "
                "time, or by another version); continuing from every stored trial as a warm start instead of a "
                "replay.",
                self.history.search_id,
                k,
                self.script[0]["trial"],
                self.script[0]["k"],
            )
            self.searcher = self.make_searcher({k: r["loss"] for k, r in self.history.finished("rule").items()})
            self.script = []
            return True
        if record is not None:
            self.searcher.on_trial_complete(trial_id, _report(record, point))
            self._due_twin(k)
        elif k in self.waiting:
            self.waiting[k].append((trial_id, point))
        else:
            self.waiting[k] = [(trial_id, point)]
            self._submit(pool, k, "rule")
        return True

    def _replays(self, record: dict | None) -> bool:
        """Whether a proposal of `record`'s size keeps the replay on track: a size already known, or the next
        stored trial of this search (then consumed)."""
        if record is None or (id(record) in self.unreplayed and record is not self.script[0]):
            return False
        if record is self.script[0]:
            self.unreplayed.discard(id(self.script.pop(0)))
            if not self.script:
                logger.info(
                    "Search %s: replayed its %d stored trial(s).", self.history.search_id, len(self.history.replay)
                )
        return True

    def _stop_proposing(self) -> bool:
        # Sizes whose random twin is missing: found in the store from a search run without the baseline.
        self.proposing = False
        for k in sorted(self.history.finished("rule")):
            self._due_twin(k)
        return bool(self.twins)

    def _due_twin(self, k: int) -> None:
        if self.random_baseline and k not in self.twinned and self.history.get(k, "random") is None:
            self.twinned.add(k)
            self.twins.append(k)

    def _submit(self, pool, k: int, selection: str) -> None:
        self.running[pool.submit(self.history.evaluate, k, selection, self.trial)] = (k, selection)

    def _finish(self, future: concurrent.futures.Future) -> Exception | None:
        k, selection = self.running.pop(future)
        try:
            loss, elapsed = future.result()
        except Exception as error:  # raised once the trials still running are recorded: they are paid for
            return error
        record = self.history.record(k, selection, loss, elapsed)
        if selection == "rule":
            for trial_id, point in self.waiting.pop(k):
                self.searcher.on_trial_complete(trial_id, _report(record, point))
            self._due_twin(k)
        return None


class _InlineExecutor:
    """Runs each trial at once in the calling thread, for one trial at a time: Ctrl-C then stops the trial itself."""

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing runs in the background."""


def _report(record: dict, point: dict) -> dict:
    # BlendSearch's cost attribute: a trial's cost grows with its size, and reads no clock (reproducible).
    return {"loss": record["loss"], "time_total_s": record["time_s"], "cost": record["k"], "config": point}


class History:
    """The trials of one search id in [low, high]: loaded from the store, extended and persisted as they finish.

    `replay` holds this search's own rule trials (same range, same `PROPOSAL_FIELDS`) in the order they ran;
    `warm` (size -> loss) the rule trials of other searches stored before this one's first trial, which is what
    this search was warm-started from when it began. Rule trials count whatever the seed that proposed them;
    random-selection trials only under their own seed, which drew their rows. Trials stored under `earlier_ids`
    (the ids this search had in earlier versions) count as this search's.
    """

    def __init__(
        self, store, search_id: str, low: int, high: int, config: "SearchConfig", earlier_ids: tuple[str, ...] = ()
    ):
        self.store, self.search_id, self.low, self.high = store, search_id, low, high
        self.config = dataclasses.asdict(config)
        records = store.records(TRIAL_KIND) if store is not None else []
        ids = {search_id, *earlier_ids}
        mine = [r for r in records if r.get("search_id") in ids and r.get("selection") in SELECTIONS]
        self._next_trial = max((r.get("trial", 0) for r in mine), default=0) + 1
        self.trials: list[dict] = []
        self._by_key: dict[tuple[int, str], dict] = {}
        self.replay: list[dict] = []
        self.warm: dict[int, float] = {}
        started = False
        for record in mine:  # in store order
            if not (low <= record["k"] <= high and record.get("loss") is not None) or not self._counts(record):
                continue
            self._add(record)
            own = self._is_own(record)
            started = started or own
            if record["selection"] != "rule" or self.get(record["k"], "rule") is not record:
                continue
            if own:
                self.replay.append(record)
            elif not started:
                self.warm[record["k"]] = record["loss"]
        self.replay.sort(key=lambda r: r["trial"])

    def _counts(self, record: dict) -> bool:
        """Whether a stored trial gives this search its loss: any rule trial, a random one of the same seed."""
        seed = (record.get("search_config") or {}).get("seed", self.config["seed"])
        return record["selection"] == "rule" or seed == self.config["seed"]

    def _is_own(self, record: dict) -> bool:
        stored = record.get("search_config") or {}
        return (record.get("low"), record.get("high")) == (self.low, self.high) and all(
            name in stored and stored[name] == self.config[name] for name in PROPOSAL_FIELDS
        )

    def _add(self, record: dict) -> None:
        key = (record["k"], record["selection"])
        if key not in self._by_key:
            self._by_key[key] = record
            self.trials.append(record)

    def get(self, k: int, selection: str) -> dict | None:
        return self._by_key.get((k, selection))

    def finished(self, selection: str) -> dict[int, dict]:
        return {k: r for (k, s), r in self._by_key.items() if s == selection}

    def evaluate(self, k: int, selection: str, trial: Callable[[int, str, str], float]) -> tuple[float, float]:
        """Run one trial (in a worker thread when several run at once): its loss and seconds. The caller's thread
        records it."""
        logger.info("Search %s: %s selection of k=%d.", self.search_id, selection, k)
        start = time.perf_counter()
        loss = trial(k, selection, trial_subset_id(self.search_id, selection, k))
        elapsed = time.perf_counter() - start
        try:
            loss = float(loss)
        except (TypeError, ValueError) as error:
            raise ValueError(f"The {selection} trial at k={k} returned `{loss!r}`, not a number.") from error
        if not math.isfinite(loss):
            raise ValueError(
                f"The {selection} trial at k={k} returned a loss of `{loss}`. A search needs finite losses: check "
                "the objective (or lower the learning rate if finetuning diverged)."
            )
        return loss, elapsed

    def record(self, k: int, selection: str, loss: float, elapsed: float) -> dict:
        """Number a finished trial in the order trials finish and persist it."""
        record = {
            "kind": TRIAL_KIND,
            "subset_id": trial_subset_id(self.search_id, selection, k),
            "search_id": self.search_id,
            "trial": self._next_trial,
            "k": k,
            "loss": loss,
            "time_s": elapsed,
            "selection": selection,
            "low": self.low,
            "high": self.high,
            "search_config": self.config,
        }
        logger.info(
            "Search %s: trial %d, %s selection of k=%d: loss %.4g.",
            self.search_id,
            record["trial"],
            selection,
            k,
            loss,
        )
        self._next_trial += 1
        if self.store is not None:
            record = self.store.append(record)
        self._add(record)
        return record

    def result(self) -> SearchResult:
        rule = self.finished("rule")
        if not rule:
            raise RuntimeError(f"Search {self.search_id} finished no trial: raise `time_budget_s` or `num_samples`.")
        best_k = min(rule, key=lambda k: (rule[k]["loss"], k))
        trace = [
            {"trial": r["trial"], "k": r["k"], "loss": r["loss"], "time_s": r["time_s"], "selection": r["selection"]}
            for r in sorted(self.trials, key=lambda r: r["trial"])
        ]
        return SearchResult(
            best_k,
            rule[best_k]["loss"],
            trace,
            self.search_id,
            self.low,
            self.high,
            self.config["log_scale"],
            self.config["method"],
        )


def trial_subset_id(search_id: str, selection: str, k: int) -> str:
    return f"{search_id}/{selection}/k={k}"
