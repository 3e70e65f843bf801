"""How much data to keep: FLAML BlendSearch over the subset size k, and the data-size curve it traces.

The paper (Section 5.2) found that the eval loss of a model finetuned on the top k rows is not monotone in k
(a "double descent") and used BlendSearch to pick k. Each trial here keeps the top k rows by `instruct_score`,
finetunes the base model with the labelling runner and measures its eval loss; a user objective can replace that
trial. Trials are written to a [`~hf_instructmining.LabelStore`] as they finish, so a search that is killed
resumes where it stopped and a later search over the same data warm-starts from every finished trial. Several
trials can run at once (`SearchConfig.max_concurrent_trials`): BlendSearch proposes sizes while others are still
running, as it does under Ray Tune.
"""

import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .import_utils import require
from .search_result import SELECTIONS, SearchResult


if TYPE_CHECKING:
    from datasets import Dataset

    from .labeling.store import LabelStore


logger = logging.getLogger(__name__)

TRIAL_KIND = "search_trial"
# BlendSearch answers `None` while a local thread whose step has shrunk to one candidate keeps proposing finished
# neighbours: runs of a thousand and more happen around a well-explored basin, at about 0.3 ms each. This many in
# a row ends the search.
_MAX_EMPTY_SUGGESTIONS = 20_000
_PLACEMENT_FIELDS = ("device", "devices", "output_dir")
_OPTUNA_WRAPPERS = ("flaml.tune.searcher.suggestion", "ray.tune.search.optuna.optuna_search")
# `LabelingConfig` settings of generated-answer metrics: trials are ranked by eval loss and never generate, so these
# settings do not change a trial, and leaving them out keeps the ids of searches stored before they existed.
_GENERATION_PREFIX = "generation_"


@dataclass
class SearchConfig:
    """How [`search_subset_size`] searches over the subset size k.

    Args:
        log_scale (`bool`, *optional*, defaults to `True`):
            Search k on a log scale: the interesting sizes span orders of magnitude (the paper kept 2,532 of
            100,000 rows).
        resolution (`float`, *optional*, defaults to `0.05`):
            Spacing of the candidate sizes: on the log scale neighbouring candidates differ by this factor
            (`0.05`: 5%), on the linear scale by this fraction of the range. `0` makes every integer a candidate.
            Sizes closer than one finetuning run can tell apart only waste trials.
        initial_sizes (`int`, *optional*, defaults to `3`):
            How many log-spaced (or evenly spaced) sizes are tried first, cheapest first from `low`, leaving out
            the expensive top of the range. They give the search a coarse look at the whole curve, so that it does
            not settle in a local minimum next to the cheap start; `0` starts from `low` alone.
        seed (`int`, *optional*, defaults to `0`):
            Seeds BlendSearch and the random-selection baseline.
        score_column (`str`, *optional*, defaults to `"instruct_score"`):
            The column that ranks rows, lower is better.
        search_id (`str`, *optional*):
            Names the search in the store. By default it is derived from the data, the score column, the seed and
            the trial (the labelling config and eval set, or the objective's name), so re-running the same search
            resumes it. Set it to share or separate trials explicitly.
        max_concurrent_trials (`int`, *optional*):
            How many trials run at once: BlendSearch proposes the next sizes while earlier ones are still running.
            By default one at a time in [`search_subset_size`], and as many as the cluster has room for in
            [`search_subset_size_with_ray`]. More than one needs an `objective` (called from several threads, so
            it must be thread-safe) or Ray: the built-in trial finetunes in this process, on one device. With one
            at a time a seed gives the same search every time; with more, the sizes proposed depend on which
            trials finish first. It does not enter the search id: any concurrency resumes the same search.
    """

    log_scale: bool = field(default=True, metadata={"help": "Search k on a log scale."})
    resolution: float = field(
        default=0.05,
        metadata={
            "help": "Spacing of the candidate sizes: a factor on the log scale (0.05 = 5 percent), a fraction of "
            "the range on the linear scale; 0 makes every integer a candidate."
        },
    )
    initial_sizes: int = field(
        default=3,
        metadata={
            "help": "Spread-out sizes tried first, cheapest first, before BlendSearch takes over; 0 starts from "
            "the smallest size alone."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds BlendSearch and the random-selection baseline."})
    score_column: str = field(
        default="instruct_score", metadata={"help": "The column that ranks rows (lower is better)."}
    )
    search_id: str | None = field(
        default=None, metadata={"help": "Names the search in the store (derived from the data and trial by default)."}
    )
    max_concurrent_trials: int | None = field(
        default=None,
        metadata={
            "help": "How many trials run at once: 1 by default, as many as the cluster holds with Ray. More than one "
            "needs a thread-safe objective or Ray; the built-in trial runs one finetuning at a time."
        },
    )

    def __post_init__(self):
        if not 0 <= self.resolution < 1:
            raise ValueError(f"`resolution` must be in [0, 1), got `{self.resolution!r}`.")
        if self.initial_sizes < 0:
            raise ValueError(f"`initial_sizes` must be at least 0, got `{self.initial_sizes!r}`.")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(
                f"`max_concurrent_trials` must be at least 1 (or `None`), got `{self.max_concurrent_trials!r}`."
            )


def search_subset_size(
    scored: "Dataset",
    *,
    low: int = 1,
    high: int | None = None,
    num_samples: int | None = 10,
    time_budget_s: float | None = None,
    objective: Callable[..., float] | None = None,
    store: "LabelStore | str | os.PathLike | None" = None,
    random_baseline: bool = False,
    config: SearchConfig | None = None,
    eval_dataset: "Dataset | None" = None,
    labeling_config: Any = None,
) -> SearchResult:
    """Find how many top-ranked rows to keep with FLAML BlendSearch over k in [`low`, `high`].

    Each trial keeps the top k rows by score ([`select_top_k`]), finetunes with [`finetune_and_evaluate`] and
    returns the eval loss, or calls `objective(k)` instead. The search first tries a few spread-out sizes, cheapest
    first from `low` (`SearchConfig.initial_sizes`), then BlendSearch blends a local search around the best sizes
    with a global one, cheap sizes first (`low_cost_partial_config`). Every finished trial is recorded in `store`
    (kind `"search_trial"`): running the same search again resumes it, and every finished trial in range seeds
    the next search (`points_to_evaluate` with `evaluated_rewards`); no finished size is ever run twice. With
    `SearchConfig(max_concurrent_trials=n)` up to n trials run at once, each in a thread of this process (with
    [`search_subset_size_with_ray`], each thread waits on a Ray task): BlendSearch proposes a new size whenever
    one finishes, and results are recorded and reported to it as they come in.

    Args:
        scored (`Dataset`): the scored candidates (e.g. `ds.map(instruct_score)`).
        low (`int`, *optional*, defaults to `1`): the smallest size tried.
        high (`int`, *optional*): the largest size tried; defaults to every row with a score.
        num_samples (`int`, *optional*, defaults to `10`): how many sizes the search evaluates in all, counting
            finished trials from the store and trials still running; `None` for no limit (then set `time_budget_s`).
        time_budget_s (`float`, *optional*): wall-clock seconds for this call: no trial starts after it runs out,
            and the trials running then finish.
        objective (`Callable[[int], float]`, *optional*): `objective(k) -> loss`, used in place of finetuning.
            With `random_baseline=True` it is also called as `objective(k, selection="random")`. With
            `max_concurrent_trials` above 1 it is called from several threads at once.
        store (`LabelStore`, `str` or `os.PathLike`, *optional*): where trials persist (a store or its path).
        random_baseline (`bool`, *optional*, defaults to `False`): also evaluate k random rows (seeded) at every
            size the search tries, to see whether the rule beats random at that size.
        config (`SearchConfig`, *optional*): scale, resolution, seed, score column, search id, concurrency.
        eval_dataset (`Dataset`, *optional*): the evaluation set of the built-in trial.
        labeling_config (`LabelingConfig`, *optional*): base model and training settings of the built-in trial.

    Returns:
        `SearchResult`: the best size, its loss and the trace of every trial in range.

    Raises:
        `ValueError`: bad bounds, no score column, no budget, several concurrent trials of the built-in trial, or a
            trial that returned a non-finite loss. A trial's own error is raised once the trials running beside it
            have finished and been recorded.

    Example:

    ```py
    >>> import math
    >>> from datasets import Dataset
    >>> from hf_instructmining import search_subset_size
    >>> scored = Dataset.from_dict({"instruction": ["q"] * 500, "output": ["a"] * 500, "instruct_score": list(range(500))})
    >>> result = search_subset_size(scored, low=10, high=500, num_samples=15,
    ...                             objective=lambda k: (math.log(k) - math.log(120)) ** 2)
    >>> 100 <= result.best_k <= 140
    True
    ```
    """
    config = config or SearchConfig()
    rankable = _rankable_rows(scored, config.score_column)
    high = rankable if high is None else high
    _check_arguments(low, high, rankable, num_samples, time_budget_s, config.score_column)
    if objective is None:
        if eval_dataset is None or labeling_config is None:
            raise ValueError(
                "The built-in trial finetunes on the top k rows: pass `eval_dataset=` and `labeling_config=` (a "
                "`LabelingConfig`), or pass `objective=` to evaluate sizes your own way."
            )
        if (config.max_concurrent_trials or 1) > 1:
            raise ValueError(
                f"`max_concurrent_trials={config.max_concurrent_trials}` would run that many finetunings in this "
                "process, on one device. Use `search_subset_size_with_ray` (one finetuning per GPU of a Ray "
                "cluster), or pass an `objective=` that runs trials elsewhere."
            )
        identity: Any = {"labeling": labeling_config, "eval": _fingerprint(eval_dataset)}
    else:
        identity = {"objective": f"{getattr(objective, '__module__', '')}.{getattr(objective, '__qualname__', '')}"}
    search_id = config.search_id or _derive_search_id(scored, config, identity)
    store = _open_store(store)
    if objective is None:
        trial = _finetune_trial(scored, eval_dataset, labeling_config, config, store, search_id)
    else:
        trial = _objective_trial(objective, random_baseline)
    history = _History(store, search_id, low, high, config)
    sizes = _SizeSpace(low, high, config)
    searcher = _blendsearch(sizes, history.finished("rule"), num_samples, time_budget_s, config)
    if history.trials:
        logger.info(
            "Search %s: %d finished trial(s) in range [%d, %d] from the store.",
            search_id,
            len(history.trials),
            low,
            high,
        )

    deadline = math.inf if time_budget_s is None else time.monotonic() + time_budget_s
    loop = _TrialLoop(searcher, sizes, history, trial, random_baseline, config.max_concurrent_trials or 1)
    loop.run(num_samples, deadline)
    return history.result(config.log_scale)


def _rankable_rows(scored: "Dataset", score_column: str) -> int:
    if score_column not in getattr(scored, "column_names", []):
        raise ValueError(
            f"The dataset has no `{score_column}` column (columns: {getattr(scored, 'column_names', None)}). "
            "Score it first, e.g. `ds.map(instruct_score)`, or set `SearchConfig(score_column=...)`."
        )
    return int((~np.isnan(_scores(scored, score_column))).sum())


def _scores(scored: "Dataset", column: str) -> np.ndarray:
    # Through Arrow: a numpy-formatted column is converted row by row (about a minute per 100,000 rows).
    table = scored.select_columns([column]).with_format("arrow")[:]
    return np.asarray(table[column].to_numpy(), dtype=float)


def _check_arguments(low, high, rankable, num_samples, time_budget_s, score_column) -> None:
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"`{name}` must be an integer, got `{value!r}`.")
    if low < 1:
        raise ValueError(f"`low` must be at least 1 (a subset needs a row), got `low={low}`.")
    if low > high:
        raise ValueError(f"`low` must not exceed `high`, got `low={low}` and `high={high}`.")
    if high > rankable:
        raise ValueError(
            f"`high={high}` is beyond the data: only {rankable} row(s) have a finite `{score_column}`. "
            f"Pass `high<={rankable}`."
        )
    if num_samples is None and time_budget_s is None:
        raise ValueError("Give the search a budget: `num_samples`, `time_budget_s` or both.")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"`num_samples` must be at least 1 (or `None` with a `time_budget_s`), got {num_samples}.")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"`time_budget_s` must be positive, got {time_budget_s}.")


def _derive_search_id(scored: "Dataset", config: SearchConfig, identity: dict) -> str:
    from .labeling.store import to_jsonable

    if dataclasses.is_dataclass(identity.get("labeling")):
        # Where a run happens does not change its loss: moving to another device resumes the same search.
        labeling = {
            name: value
            for name, value in dataclasses.asdict(identity["labeling"]).items()
            if name not in _PLACEMENT_FIELDS and not name.startswith(_GENERATION_PREFIX)
        }
        identity = {**identity, "labeling": labeling}
    key = {
        "data": _fingerprint(scored),
        "score_column": config.score_column,
        "seed": config.seed,
        **identity,
    }
    digest = hashlib.sha256(json.dumps(to_jsonable(key), sort_keys=True).encode()).hexdigest()
    return f"search-{digest[:12]}"


def _fingerprint(dataset) -> Any:
    if isinstance(dataset, Mapping):  # named eval sets
        return {name: _fingerprint(ds) for name, ds in dataset.items()}
    return getattr(dataset, "_fingerprint", None)


def _open_store(store):
    if store is None or hasattr(store, "append"):
        return store
    from .labeling.store import LabelStore

    return LabelStore(store)


class _SizeSpace:
    """The candidate sizes and their BlendSearch domain: an index into a size grid, or k itself."""

    def __init__(self, low: int, high: int, config: SearchConfig):
        tune = _flaml().tune
        self.grid = _size_grid(low, high, config.log_scale, config.resolution)
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


def _size_grid(low: int, high: int, log_scale: bool, resolution: float) -> np.ndarray | None:
    if resolution == 0 or low == high:
        return None
    if log_scale:
        n = math.ceil(math.log(high / low) / math.log1p(resolution)) + 1
        grid = np.geomspace(low, high, n)
    else:
        grid = np.linspace(low, high, math.ceil(1 / resolution) + 1)
    return np.unique(np.clip(np.round(grid), low, high).astype(np.int64))


def _flaml():
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


def _blendsearch(sizes: _SizeSpace, finished: dict[int, dict], num_samples, time_budget_s, config: SearchConfig):
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
        return _flaml().BlendSearch(
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


class _TrialLoop:
    """Keeps up to `workers` trials running: sizes from BlendSearch and their random twins, each recorded as it ends.

    Trials run in worker threads; the store, the history and BlendSearch are touched only by the calling thread,
    between completions. With one worker this is the sequential search: propose, run, report, run the twin.
    """

    def __init__(self, searcher, sizes: _SizeSpace, history: "_History", trial, random_baseline: bool, workers: int):
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
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="search-trial") as pool:
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


def _report(record: dict, point: dict) -> dict:
    return {"loss": record["loss"], "time_total_s": record["time_s"], "config": point}


class _History:
    """The trials of one search in [low, high]: loaded from the store, extended and persisted as they finish."""

    def __init__(self, store, search_id: str, low: int, high: int, config: SearchConfig):
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
        """Run one trial, in a worker thread: its loss and seconds. The caller's thread records it."""
        logger.info("Search %s: %s selection of k=%d.", self.search_id, selection, k)
        start = time.perf_counter()
        loss = trial(k, selection, _trial_subset_id(self.search_id, selection, k))
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
            "subset_id": _trial_subset_id(self.search_id, selection, k),
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


def _trial_subset_id(search_id: str, selection: str, k: int) -> str:
    return f"{search_id}/{selection}/k={k}"


def _objective_trial(objective: Callable[..., float], random_baseline: bool) -> Callable[[int, str, str], float]:
    if random_baseline:
        try:
            inspect.signature(objective).bind(1, selection="random")
        except TypeError as error:
            raise TypeError(
                "With `random_baseline=True` the objective is also called as `objective(k, selection='random')`; "
                f"give it a `selection` keyword ({error})."
            ) from None
        except ValueError:  # builtins without a signature: find out at the first call
            pass
    return lambda k, selection, subset_id: objective(k) if selection == "rule" else objective(k, selection=selection)


def _finetune_trial(scored, eval_dataset, labeling_config, config: SearchConfig, store, search_id: str):
    from .selection import select_top_k

    column = config.score_column
    scores = _scores(scored, column)
    # One seeded permutation of the rankable rows: random subsets are nested, like the top-k subsets they mirror.
    order = np.random.default_rng(config.seed).permutation(np.flatnonzero(~np.isnan(scores)))

    def trial(k: int, selection: str, subset_id: str) -> float:
        from .labeling.runner import finetune_and_evaluate

        if selection == "rule":
            rows = select_top_k(scored, k, score_column=column)
        else:
            rows = scored.select(sorted(order[:k].tolist()))
        metadata = {"search_id": search_id, "k": k, "selection": selection}
        metrics = finetune_and_evaluate(
            rows, eval_dataset, labeling_config, store=store, subset_id=subset_id, metadata=metadata
        )
        return metrics["eval_loss"]

    return trial
