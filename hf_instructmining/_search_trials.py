"""Running a subset-size search: the candidate sizes, FLAML's BlendSearch over them, and the loop that runs its trials.

[`~hf_instructmining.search_subset_size`] sets a search up; this module runs it. `TrialLoop` keeps up to n trials
running (in the calling thread when n is 1), reports each loss to BlendSearch as it comes, and `History` numbers,
persists and reloads the trials, which is how an interrupted search resumes and a new one warm-starts.
"""

import concurrent.futures
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .import_utils import require
from .search_result import SELECTIONS, SearchResult


if TYPE_CHECKING:
    from .search import SearchConfig


logger = logging.getLogger(__name__)

TRIAL_KIND = "search_trial"
# BlendSearch answers `None` while a local thread whose step has shrunk to one candidate keeps proposing finished
# neighbours: runs of a thousand and more happen around a well-explored basin, at about 0.3 ms each. This many in
# a row ends the search.
_MAX_EMPTY_SUGGESTIONS = 20_000
_OPTUNA_WRAPPERS = ("flaml.tune.searcher.suggestion", "ray.tune.search.optuna.optuna_search")


class SizeSpace:
    """The candidate sizes and their BlendSearch domain: an index into a size grid, or k itself."""

    def __init__(self, low: int, high: int, config: "SearchConfig"):
        tune = load_flaml().tune
        self.grid = size_grid(low, high, config.log_scale, config.resolution)
        if self.grid is None:
            self.domain = {"k": (tune.lograndint if config.log_scale else tune.randint)(low, high + 1)}
            self.start = {"k": low}
            self.count = high - low + 1
        else:
            # An integer index is uniform over the grid, which is already log- or linearly spaced.
            self.domain = {"k": tune.randint(0, len(self.grid))}
            self.start = {"k": 0}
            self.count = len(self.grid)
        self.low, self.high, self.log_scale = low, high, config.log_scale

    def initial(self, n: int) -> list[dict]:
        """`n` spread-out candidates from `low` upwards (cheapest first); the top of the range is left out."""
        if n == 0:
            return []
        if self.grid is not None:
            return [{"k": int(i)} for i in np.unique(np.round(np.linspace(0, len(self.grid) - 1, n + 1)[:-1]))]
        spaced = (np.geomspace if self.log_scale else np.linspace)(self.low, self.high, n + 1)[:-1]
        return [{"k": int(k)} for k in np.unique(np.round(spaced))]

    def to_k(self, point: dict) -> int:
        return int(point["k"]) if self.grid is None else int(self.grid[int(point["k"])])

    def to_point(self, k: int) -> dict:
        if self.grid is None:
            return {"k": int(k)}
        return {"k": int(np.argmin(np.abs(np.log(self.grid) - np.log(k))))}


def size_grid(low: int, high: int, log_scale: bool, resolution: float) -> np.ndarray | None:
    if resolution == 0 or low == high:
        return None
    if log_scale:
        n = math.ceil(math.log(high / low) / math.log1p(resolution)) + 1
        grid = np.geomspace(low, high, n)
    else:
        grid = np.linspace(low, high, math.ceil(1 / resolution) + 1)
    return np.unique(np.clip(np.round(grid), low, high).astype(np.int64))


def load_flaml():
    require("flaml", "search_subset_size")
    # flaml warns at import that its AutoML part is missing; the search needs only `flaml.tune`.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flaml.automl is not available.*")
        import flaml

    # BlendSearch's global search is FLAML's Optuna wrapper, or Ray Tune's when Ray is installed.
    for name in _OPTUNA_WRAPPERS:
        wrapper = logging.getLogger(name)
        if _quiet_repeats not in wrapper.filters:
            wrapper.addFilter(_quiet_repeats)
    return flaml


def _quiet_repeats(record: logging.LogRecord) -> bool:
    # BlendSearch re-proposes a finished size through a fallback and then tells Optuna about it twice; the
    # warning that follows is about flaml's bookkeeping, not the user's search.
    return not record.getMessage().startswith("Received additional completion")


def blendsearch(sizes: SizeSpace, finished: dict[int, dict], num_samples, time_budget_s, config: "SearchConfig"):
    import optuna

    # Several finished sizes can fall on one candidate: keep the best loss of each. BlendSearch starts local
    # search from the best of these; the rest come back from the store, unrun, if it proposes them again.
    best: dict[int, float] = {}
    for k, record in finished.items():
        index = sizes.to_point(k)["k"]
        best[index] = min(best.get(index, math.inf), record["loss"])
    # The initial sizes not run yet follow the finished ones (which come with their losses and are not rerun).
    points = [{"k": index} for index in best]
    points += [p for p in sizes.initial(config.initial_sizes) if p["k"] not in best]
    # BlendSearch creates an Optuna study per search; its INFO line says nothing a user needs.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return load_flaml().BlendSearch(
            metric="loss",
            mode="min",
            space=sizes.domain,
            low_cost_partial_config=sizes.start,
            points_to_evaluate=points or None,
            evaluated_rewards=list(best.values()) or None,
            time_budget_s=time_budget_s,
            num_samples=num_samples,
            seed=config.seed,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)


class TrialLoop:
    """Keeps up to `workers` trials running: sizes from BlendSearch and their random twins, each recorded as it ends.

    Trials run in worker threads; the store, the history and BlendSearch are touched only by the calling thread,
    between completions. With one worker this is the sequential search in the calling thread: propose, run, report,
    run the twin.
    """

    def __init__(self, searcher, sizes: SizeSpace, history: "History", trial, random_baseline: bool, workers: int):
        self.searcher, self.sizes, self.history, self.trial = searcher, sizes, history, trial
        self.random_baseline, self.workers = random_baseline, workers
        self.running: dict[concurrent.futures.Future, tuple[int, str]] = {}
        # A rule size in flight -> the BlendSearch trials waiting for its loss: a size is never run twice at once,
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
                done, _ = concurrent.futures.wait(self.running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in [f for f in self.running if f in done]:  # submission order: reproducible records
                    error = self._finish(future)
                    failure = failure or error
                # A finished trial can open sizes that BlendSearch could not propose while it was running.
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
        """Start a due random twin, or ask BlendSearch for a size; `False` when nothing can start for now."""
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
        if self.empty >= _MAX_EMPTY_SUGGESTIONS:
            if self.running:
                return False
            logger.info("Search %s: BlendSearch has nothing new to propose; stopping.", self.history.search_id)
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
        if record is not None:
            self.searcher.on_trial_complete(trial_id, _report(record, point))
            self._due_twin(k)
        elif k in self.waiting:
            self.waiting[k].append((trial_id, point))
        else:
            self.waiting[k] = [(trial_id, point)]
            self._submit(pool, k, "rule")
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
    return {"loss": record["loss"], "time_total_s": record["time_s"], "config": point}


class History:
    """The trials of one search in [low, high]: loaded from the store, extended and persisted as they finish."""

    def __init__(self, store, search_id: str, low: int, high: int, config: "SearchConfig"):
        self.store, self.search_id, self.low, self.high = store, search_id, low, high
        self.config = dataclasses.asdict(config)
        records = store.records(TRIAL_KIND) if store is not None else []
        mine = [r for r in records if r.get("search_id") == search_id and r.get("selection") in SELECTIONS]
        self._next_trial = max((r.get("trial", 0) for r in mine), default=0) + 1
        self.trials: list[dict] = []
        self._by_key: dict[tuple[int, str], dict] = {}
        for record in mine:
            if low <= record["k"] <= high and record.get("loss") is not None:
                self._add(record)

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

    def result(self, log_scale: bool) -> SearchResult:
        rule = self.finished("rule")
        if not rule:
            raise RuntimeError(f"Search {self.search_id} finished no trial: raise `time_budget_s` or `num_samples`.")
        best_k = min(rule, key=lambda k: (rule[k]["loss"], k))
        trace = [
            {"trial": r["trial"], "k": r["k"], "loss": r["loss"], "time_s": r["time_s"], "selection": r["selection"]}
            for r in sorted(self.trials, key=lambda r: r["trial"])
        ]
        return SearchResult(best_k, rule[best_k]["loss"], trace, self.search_id, self.low, self.high, log_scale)


def trial_subset_id(search_id: str, selection: str, k: int) -> str:
    return f"{search_id}/{selection}/k={k}"
