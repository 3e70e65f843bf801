"""How much data to keep: a search over the subset size k, and the data-size curve it traces.

The paper (Section 5.2) found that the eval loss of a model finetuned on the top k rows is not monotone in k
(a "double descent") and used FLAML's BlendSearch to pick k. Each trial here keeps the top k rows by
`instruct_score`, finetunes the base model with the labelling runner and measures its eval loss; a user objective
can replace that trial. The default searcher brackets the minimum (a coarse sweep, then parabolic narrowing of the
lowest basins), which needs fewer finetuning runs and fewer rows trained than a coarse-to-fine grid, random search
or BlendSearch on every curve of `benchmarks/bench_search.py`; BlendSearch remains one setting away
(`SearchConfig(method="blendsearch")`). Trials are written to a [`~hf_instructmining.LabelStore`] as they finish,
so a search that is killed resumes by replaying them (and ends where the uninterrupted search would have), and a
later search over the same data warm-starts from every finished trial. Several trials can run at once
(`SearchConfig.max_concurrent_trials`): the searcher proposes sizes while others are still running.
"""

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import SearchConfig
from .result import SearchResult
from .strategy import SizeSpace, make_searcher
from .trials import History, TrialLoop


if TYPE_CHECKING:
    from datasets import Dataset

    from ..labeling.store import LabelStore


logger = logging.getLogger(__name__)

DEFAULT_NUM_SAMPLES = 10
_PLACEMENT_FIELDS = ("device", "devices", "output_dir")
# `LabelingConfig` settings of generated-answer metrics: trials are ranked by eval loss and never generate, so these
# settings do not change a trial, and leaving them out keeps the ids of searches stored before they existed.
_GENERATION_PREFIX = "generation_"
# `dtype="auto"` is the device's own precision (bf16 where it computes bf16 natively, as on CUDA before the field
# existed), so like the device it is placement; an explicit dtype is a choice that changes the losses. Where the loss
# is computed (`fused_lm_head`) leaves it the same to 1e-5; its default follows the device too.
_PLACEMENT_DEFAULTS = {"dtype": "auto", "fused_lm_head": None}
# The seed in every default search id: the default seed's, so that the ids of searches stored while the seed was
# part of the id stay the same for it.
_ID_SEED = 0


def search_subset_size(
    scored: "Dataset",
    *,
    low: int = 1,
    high: int | None = None,
    num_samples: int | None = DEFAULT_NUM_SAMPLES,
    time_budget_s: float | None = None,
    objective: Callable[..., float] | None = None,
    store: "LabelStore | str | os.PathLike | None" = None,
    random_baseline: bool = False,
    config: SearchConfig | None = None,
    eval_dataset: "Dataset | None" = None,
    labeling_config: Any = None,
) -> SearchResult:
    """Find how many top-ranked rows to keep: a search over k in [`low`, `high`], each trial a finetuning run.

    Each trial keeps the top k rows by score ([`select_top_k`]), finetunes with [`finetune_and_evaluate`] and
    returns the eval loss, or calls `objective(k)` instead. The default searcher (`SearchConfig.method`) first
    sweeps a few sizes spread over the whole range, cheapest first on a wide one (`SearchConfig.initial_sizes`),
    tries an end of the range while the loss falls steeply towards it, then narrows the lowest local minima by parabolic
    interpolation, taking turns with bisecting the widest untried stretch; `method="blendsearch"` runs FLAML's
    BlendSearch instead. Every finished trial is recorded in `store` (kind `"search_trial"`). Running the same
    search again resumes it by replay: its searcher is rebuilt from the seed and fed the stored trials in order,
    so one trial at a time it proposes the same sizes and returns the same result as a search never stopped.
    Finished trials of other searches over the same data (another range or configuration) in range warm-start
    it; no finished size is ever run twice. With `SearchConfig(max_concurrent_trials=n)` up to n trials run at
    once, each in a thread of this process (with [`search_subset_size_with_ray`], each thread waits on a Ray
    task): the searcher proposes a new size whenever one finishes, and results are recorded and reported to it
    as they come in.

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
        config (`SearchConfig`, *optional*): searcher, scale, resolution, seed, score column, search id, concurrency.
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
        identity = _finetune_identity(labeling_config, eval_dataset)
    else:
        identity = {"objective": f"{getattr(objective, '__module__', '')}.{getattr(objective, '__qualname__', '')}"}
    search_id = config.search_id or _derive_search_id(scored, config, identity)
    earlier_ids = ()
    if config.search_id is None and config.seed != _ID_SEED:
        # Stores written while the seed named the search hold this seed's trials under that id.
        earlier_ids = (_derive_search_id(scored, config, identity, seed=config.seed),)
    store = open_store(store)
    if objective is None:
        trial = finetune_trial(scored, eval_dataset, labeling_config, config, store, search_id)
    else:
        trial = _objective_trial(objective, random_baseline)
    history = History(store, search_id, low, high, config, earlier_ids)
    sizes = SizeSpace(low, high, config)
    if history.trials:
        logger.info(
            "Search %s: %d finished trial(s) in range [%d, %d] from the store, %d of them this search's own.",
            search_id,
            len(history.trials),
            low,
            high,
            len(history.replay),
        )

    deadline = math.inf if time_budget_s is None else time.monotonic() + time_budget_s
    loop = TrialLoop(
        lambda warm: make_searcher(sizes, warm, config),
        sizes,
        history,
        trial,
        random_baseline,
        config.max_concurrent_trials or 1,
    )
    loop.run(num_samples, deadline)
    return history.result()


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


def finetune_search_id(scored: "Dataset", config: SearchConfig, labeling_config, eval_dataset) -> str:
    """The id of a search whose trials finetune (the built-in trial), wherever the trials run: the same data and
    settings give the same id in this process and on a Ray cluster, so either resumes the other's trials."""
    return _derive_search_id(scored, config, _finetune_identity(labeling_config, eval_dataset))


def _finetune_identity(labeling_config, eval_dataset) -> dict:
    return {"labeling": labeling_config, "eval": _fingerprint(eval_dataset)}


def _derive_search_id(scored: "Dataset", config: SearchConfig, identity: dict, *, seed: int = _ID_SEED) -> str:
    """The default search id: the data, the score column and the trial. The seed only orders the proposals, so it
    does not name the search (every seed reuses the same finished sizes); `seed` gives the id a search had while
    it did."""
    from .._json import to_jsonable

    if dataclasses.is_dataclass(identity.get("labeling")):
        # Where a run happens does not change its loss: moving to another device resumes the same search.
        labeling = {
            name: value
            for name, value in dataclasses.asdict(identity["labeling"]).items()
            if name not in _PLACEMENT_FIELDS
            and not name.startswith(_GENERATION_PREFIX)
            and _PLACEMENT_DEFAULTS.get(name, object()) != value
        }
        identity = {**identity, "labeling": labeling}
    key = {
        "data": _fingerprint(scored),
        "score_column": config.score_column,
        "seed": seed,
        **identity,
    }
    digest = hashlib.sha256(json.dumps(to_jsonable(key), sort_keys=True).encode()).hexdigest()
    return f"search-{digest[:12]}"


def _fingerprint(dataset) -> Any:
    if isinstance(dataset, Mapping):  # named eval sets
        return {name: _fingerprint(ds) for name, ds in dataset.items()}
    return getattr(dataset, "_fingerprint", None)


def open_store(store):
    """`store` as a [`LabelStore`] (a path opens one), or `None`."""
    if store is None or hasattr(store, "append"):
        return store
    from ..labeling.store import LabelStore

    return LabelStore(store)


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


def finetune_trial(scored, eval_dataset, labeling_config, config: SearchConfig, store, search_id: str):
    """The built-in trial: `trial(k, selection, subset_id)` finetunes on the top k rows (or k random rows, for the
    baseline) and returns the eval loss."""
    from ..selection import select_top_k

    column = config.score_column
    scores = _scores(scored, column)
    # One seeded permutation of the rankable rows: random subsets are nested, like the top-k subsets they mirror.
    order = np.random.default_rng(config.seed).permutation(np.flatnonzero(~np.isnan(scores)))

    def trial(k: int, selection: str, subset_id: str) -> float:
        from ..labeling.finetune import finetune_and_evaluate

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
