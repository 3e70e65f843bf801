"""Tests for `search_subset_size`: the searchers over subset size, their store, resume by replay, warm start, result."""

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time

import numpy as np
import pytest
from datasets import Dataset

from hf_instructmining import SearchConfig, SearchResult, search_subset_size
from hf_instructmining.labeling.store import LabelStore


LOW, HIGH = 100, 100_000
PAPER_K = 2_532  # the size the paper's BlendSearch kept, of 100,000 rows


def double_descent(k: int) -> float:
    """Eval loss against data size shaped like the paper's: down to its best size, 2,532, up, down again (worse)."""
    x = math.log10(k)
    return (
        1.05
        + 0.25 * (1 - math.exp(-(((x - math.log10(PAPER_K)) / 0.35) ** 2)))
        - 0.17 * math.exp(-(((x - 4.6) / 0.3) ** 2))
    )


BEST_LOSS = min(double_descent(k) for k in range(LOW, HIGH + 1))


def log_distance_to_300(k: int) -> float:
    """The curve of the resume recipe: one basin, its minimum (0) at k = 300."""
    return (math.log(k) - math.log(300)) ** 2


@pytest.fixture(scope="module")
def scored():
    return Dataset.from_dict({"instruct_score": np.linspace(-1, 1, HIGH)})


class Counting:
    """An objective that records every size it is asked about, and can fail after a number of calls."""

    def __init__(self, fail_after: int | None = None, curve=double_descent):
        self.calls: list[tuple[int, str]] = []
        self.fail_after, self.curve = fail_after, curve

    def __call__(self, k, selection="rule"):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls.append((k, selection))
        # The random baseline is worse at small sizes and as good at large ones (the paper's finding).
        return self.curve(k) + (0.2 / math.log10(k) if selection == "random" else 0.0)


def replayed(result: SearchResult) -> tuple:
    """What a resumed search must reproduce: the answer, and every trial's number, size, loss and selection."""
    return result.best_k, result.best_loss, [(t["trial"], t["k"], t["loss"], t["selection"]) for t in result.trace]


def test_the_double_descent_curve_has_its_optimum_at_the_papers_size():
    assert min(range(LOW, HIGH + 1), key=double_descent) == PAPER_K


# `benchmarks/bench_search.py` checks 100 seeds on its own paper-shaped curve; the test runs five.
@pytest.mark.parametrize("seed", range(5))
def test_finds_the_double_descent_optimum_in_40_trials(scored, seed):
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=40, objective=double_descent, config=SearchConfig(seed=seed)
    )
    assert abs(result.best_k / PAPER_K - 1) <= 0.10
    assert result.best_loss - BEST_LOSS <= 2e-3
    assert result.best_loss == double_descent(result.best_k)
    rule_ks = [t["k"] for t in result.trace]
    assert len(rule_ks) == len(set(rule_ks)) == 40
    assert all(LOW <= k <= HIGH and isinstance(k, int) for k in rule_ks)
    assert rule_ks[0] == min(rule_ks[:4])  # the sweep starts with its cheapest size


def test_few_and_small_trials_reach_the_double_descent_basin(scored):
    # `benchmarks/bench_search.py` in small: the median over 20 seeds of the trials, and of the rows trained, until
    # a size lands within 2% of the best loss (a coarse-to-fine grid needs about 6 trials and 100,000 rows there).
    trials, rows = [], []
    for seed in range(20):
        result = search_subset_size(
            scored, low=LOW, high=HIGH, num_samples=15, objective=double_descent, config=SearchConfig(seed=seed)
        )
        ks = [t["k"] for t in result.trace]
        n = next(n for n, k in enumerate(ks, start=1) if double_descent(k) <= BEST_LOSS * 1.02)
        trials.append(n)
        rows.append(sum(ks[:n]))
    assert np.median(trials) <= 5 and np.median(rows) < 20_000


@pytest.mark.parametrize("seed", range(3))
def test_blendsearch_stays_available(scored, seed):
    config = SearchConfig(method="blendsearch", seed=seed)
    result = search_subset_size(scored, low=LOW, high=HIGH, num_samples=40, objective=double_descent, config=config)
    rule_ks = [t["k"] for t in result.trace]
    assert len(rule_ks) == len(set(rule_ks)) == 40
    assert rule_ks[0] == LOW  # its low-cost start
    assert result.best_loss <= BEST_LOSS * 1.02


def test_a_curve_that_falls_to_the_end_tries_the_largest_size_after_the_sweep(scored):
    # "Keep everything": the sweep sees the loss still falling at its largest size, so the end comes next.
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=5, objective=lambda k: 1 + 1.5 * (k / LOW) ** -0.3
    )
    assert [t["k"] for t in result.trace][-1] == HIGH == result.best_k


@pytest.mark.parametrize("seed", range(3))
def test_a_gentle_fall_tries_cheaper_sizes_before_the_end(scored, seed):
    # 2% lower per decade: the end of a wide range is its dearest trial and the fall promises little there, so the
    # gaps below it (where a narrow basin could hide) come first.
    result = search_subset_size(
        scored,
        low=LOW,
        high=HIGH,
        num_samples=7,
        objective=lambda k: 1.45 - 0.03 * math.log10(k),
        config=SearchConfig(seed=seed),
    )
    ks = [t["k"] for t in result.trace]
    assert len(ks) == 7 and HIGH not in ks


@pytest.mark.parametrize("seed", range(4))
def test_on_a_narrow_range_the_sweep_is_a_coarse_to_fine_grid(seed):
    # k in [16, 128]: the dearest sweep size costs less than the others together, so nothing waits, and the sweep's
    # sizes after 2 and after 4 trials are even grids on the log scale (up to whole rows), as a plain grid's are.
    from hf_instructmining.search.strategy import Bracket, SizeSpace

    sizes = SizeSpace(16, 128, SearchConfig(seed=seed))
    searcher = Bracket(sizes, {}, initial=4, seed=seed)
    ks = [sizes.to_k(searcher.suggest(str(i))) for i in range(4)]
    for prefix in (ks[:2], ks[:4]):
        steps = np.diff(np.log(sorted(prefix)))
        spacing = math.log(8) / len(prefix)
        assert np.allclose(steps, spacing, atol=0.12), ks


def test_a_narrow_range_starts_anywhere_and_a_wide_one_with_its_cheapest_sizes():
    from hf_instructmining.search.strategy import Bracket, SizeSpace

    def first_sizes(low, high):
        sizes = SizeSpace(low, high, SearchConfig())
        return [sizes.size(Bracket(sizes, {}, initial=4, seed=seed).sweep[0]) for seed in range(8)]

    # Like a plain grid's, the narrow range's first size lies anywhere, above its (log) middle for some seeds.
    assert max(first_sizes(16, 128)) > math.sqrt(16 * 128)
    # On [100, 100,000] the sweep starts in its cheapest quarter (on the log scale).
    assert max(first_sizes(LOW, HIGH)) <= LOW * (HIGH / LOW) ** 0.25


def test_an_early_local_minimum_does_not_hold_the_search(scored):
    def early_minimum(k: int) -> float:  # a shallow basin near 300 rows, the best near 6,000
        x = math.log10(k)
        return 1.25 - 0.10 * math.exp(-(((x - 2.45) / 0.22) ** 2)) - 0.26 * math.exp(-(((x - 3.8) / 0.4) ** 2))

    for seed in range(5):
        result = search_subset_size(
            scored, low=LOW, high=HIGH, num_samples=12, objective=early_minimum, config=SearchConfig(seed=seed)
        )
        assert 4_000 <= result.best_k <= 9_000


def test_same_seed_same_search(scored):
    runs = [
        search_subset_size(scored, low=LOW, high=HIGH, num_samples=10, objective=double_descent).trace
        for _ in range(2)
    ]
    assert [t["k"] for t in runs[0]] == [t["k"] for t in runs[1]]


@pytest.mark.parametrize("method", ["bracket", "blendsearch"])
def test_a_search_stopped_after_any_trial_resumes_to_the_uninterrupted_search(tmp_path, method):
    # The recipe of the report that found resumed searches ending elsewhere: 3 trials, then 12, against 12 at once.
    scored = Dataset.from_dict({"instruct_score": np.linspace(-1, 1, 2_000)})
    kwargs = {"low": 10, "high": 2_000, "config": SearchConfig(method=method)}
    whole = Counting(curve=log_distance_to_300)
    expected = replayed(search_subset_size(scored, num_samples=12, objective=whole, **kwargs))
    for stop in range(1, 12):
        store = LabelStore(tmp_path / f"stopped-after-{stop}.jsonl")
        first, second = Counting(curve=log_distance_to_300), Counting(curve=log_distance_to_300)
        search_subset_size(scored, num_samples=stop, store=store, objective=first, **kwargs)
        resumed = search_subset_size(scored, num_samples=12, store=store, objective=second, **kwargs)
        assert replayed(resumed) == expected, f"stopped after trial {stop}"
        assert first.calls + second.calls == whole.calls  # the same sizes in the same order, none run twice


def test_resume_after_interruption_reruns_no_finished_size(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    kwargs = {"low": LOW, "high": HIGH, "num_samples": 12, "store": store, "config": SearchConfig(search_id="s")}
    first = Counting(fail_after=5)
    with pytest.raises(RuntimeError, match="interrupted"):
        search_subset_size(scored, objective=first, **kwargs)
    assert len(store.records("search_trial")) == 5

    second = Counting()
    result = search_subset_size(scored, objective=second, **kwargs)
    assert len(second.calls) == 7  # the budget counts the trials that finished before the interruption
    assert not {k for k, _ in first.calls} & {k for k, _ in second.calls}
    assert [t["trial"] for t in result.trace] == list(range(1, 13))
    assert {t["k"] for t in result.trace} == {k for k, _ in first.calls + second.calls}
    uninterrupted = search_subset_size(scored, low=LOW, high=HIGH, num_samples=12, objective=Counting())
    assert replayed(result)[:2] == replayed(uninterrupted)[:2]

    # Running the finished search again only reads the store.
    third = Counting()
    again = search_subset_size(scored, objective=third, **kwargs)
    assert third.calls == [] and again == result


def test_interrupted_between_a_size_and_its_random_twin_resumes_to_the_uninterrupted_search(scored, tmp_path):
    kwargs = {"low": LOW, "high": HIGH, "num_samples": 6, "random_baseline": True, "config": SearchConfig(seed=3)}
    expected = replayed(search_subset_size(scored, objective=Counting(), **kwargs))
    store = LabelStore(tmp_path / "search.jsonl")
    with pytest.raises(RuntimeError, match="interrupted"):  # the 4th rule size finished, its twin did not
        search_subset_size(scored, objective=Counting(fail_after=7), store=store, **kwargs)
    second = Counting()
    assert replayed(search_subset_size(scored, objective=second, store=store, **kwargs)) == expected
    assert second.calls[0][1] == "random"  # the missing twin first, where the uninterrupted search ran it


def test_stored_trials_the_searcher_would_not_propose_warm_start_it_instead(scored, tmp_path, caplog):
    # Trials of this search run several at a time (or by another version) cannot be replayed one by one: the
    # search carries on from them as a warm start, reruns none of them and counts them in its budget.
    config = SearchConfig(search_id="s")
    store = LabelStore(tmp_path / "search.jsonl")
    for trial, k in enumerate([50_000, 70_000], start=1):
        store.append(
            {"kind": "search_trial", "subset_id": f"s/rule/k={k}", "search_id": "s", "trial": trial, "k": k}
            | {"loss": double_descent(k), "time_s": 1.0, "selection": "rule", "low": LOW, "high": HIGH}
            | {"search_config": dataclasses.asdict(config)}
        )
    objective = Counting()
    with caplog.at_level(logging.INFO, logger="hf_instructmining"):
        result = search_subset_size(
            scored, low=LOW, high=HIGH, num_samples=8, objective=objective, store=store, config=config
        )
    assert "warm start instead of a replay" in caplog.text
    assert len(objective.calls) == 6 and not {50_000, 70_000} & {k for k, _ in objective.calls}
    assert [t["trial"] for t in result.trace] == list(range(1, 9))


def test_new_search_warm_starts_from_every_finished_trial(scored, tmp_path):
    path = tmp_path / "search.jsonl"
    config = SearchConfig(search_id="warm")
    first = Counting()
    before = search_subset_size(scored, low=LOW, high=HIGH, num_samples=8, objective=first, store=path, config=config)

    more = Counting()
    after = search_subset_size(scored, low=LOW, high=HIGH, num_samples=20, objective=more, store=path, config=config)
    assert len(more.calls) == 12
    assert not {k for k, _ in first.calls} & {k for k, _ in more.calls}
    assert after.best_loss <= before.best_loss

    # A narrower range reuses only the finished trials inside it.
    narrow = Counting()
    inside = [k for k, _ in first.calls + more.calls if 1_000 <= k <= 10_000]
    result = search_subset_size(
        scored, low=1_000, high=10_000, num_samples=len(inside) + 2, objective=narrow, store=path, config=config
    )
    assert len(narrow.calls) == 2
    assert sorted(t["k"] for t in result.trace) == sorted(inside + [k for k, _ in narrow.calls])


def test_searches_on_different_data_do_not_share_trials(scored, tmp_path):
    path = tmp_path / "search.jsonl"
    search_subset_size(scored, low=LOW, high=HIGH, num_samples=4, objective=double_descent, store=path)
    other = Dataset.from_dict({"instruct_score": np.linspace(1, -1, HIGH)})
    calls = Counting()
    result = search_subset_size(other, low=LOW, high=HIGH, num_samples=4, objective=calls, store=path)
    assert len(calls.calls) == 4 and len(result.trace) == 4


# The id this search got before `LabelingConfig` had its generation and dtype settings: stores written then resume.
STORED_SEARCH_ID = "search-ba3de325754c"


@pytest.mark.parametrize(
    "generation", [{}, {"generation_num_samples": 4, "generation_max_new_tokens": 9}, {"dtype": "auto"}]
)
def test_built_in_trial_resumes_a_search_stored_before_the_generation_settings(tmp_path, generation):
    from hf_instructmining import LabelingConfig

    rows = {"instruction": [f"q{i}" for i in range(8)], "output": ["a"] * 8}
    scored = Dataset.from_dict(rows).add_column(
        "instruct_score", [float(i) for i in range(8)], new_fingerprint="pinned-scored"
    )
    eval_ds = Dataset.from_dict({"instruction": ["q"], "output": ["a"]}).select_columns(
        ["instruction", "output"], new_fingerprint="pinned-eval"
    )
    store = LabelStore(tmp_path / "search.jsonl")
    for trial, (k, loss) in enumerate([(2, 1.5), (4, 1.2)], start=1):
        subset_id = f"{STORED_SEARCH_ID}/rule/k={k}"
        store.append(
            {"kind": "search_trial", "subset_id": subset_id, "search_id": STORED_SEARCH_ID, "trial": trial, "k": k}
            | {"loss": loss, "time_s": 1.0, "selection": "rule", "low": 2, "high": 8}
        )
    # Generation settings and placement do not change a trial; "org/base-model" is never loaded when it resumes.
    labeling = LabelingConfig(
        model_name_or_path="org/base-model", max_steps=2, text_format="text", device="cpu", **generation
    )
    result = search_subset_size(
        scored, low=2, high=8, num_samples=2, store=store, eval_dataset=eval_ds, labeling_config=labeling
    )
    assert result.search_id == STORED_SEARCH_ID
    assert (result.best_k, result.best_loss) == (4, 1.2)
    assert len(store.records("search_trial")) == 2


def _pinned_finetuning_search():
    """The data, eval set and labelling config of a search whose ids are pinned below; its model is never loaded."""
    from hf_instructmining import LabelingConfig

    rows = {"instruction": [f"q{i}" for i in range(8)], "output": ["a"] * 8}
    scored = Dataset.from_dict(rows).add_column(
        "instruct_score", [float(i) for i in range(8)], new_fingerprint="pinned-scored"
    )
    eval_ds = Dataset.from_dict({"instruction": ["q"], "output": ["a"]}).select_columns(
        ["instruction", "output"], new_fingerprint="pinned-eval"
    )
    labeling = LabelingConfig(model_name_or_path="org/base-model", max_steps=2, text_format="text", device="cpu")
    return scored, eval_ds, labeling


def test_another_seed_reruns_no_finished_size(scored, tmp_path):
    # README: no finished size is ever run twice. The seed only orders the proposals, so another seed's search
    # over the same data reuses every finished size and counts it in its budget.
    path = tmp_path / "search.jsonl"
    first = Counting()
    before = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=8, objective=first, store=path, config=SearchConfig(seed=0)
    )
    second = Counting()
    after = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=12, objective=second, store=path, config=SearchConfig(seed=1)
    )
    assert len(second.calls) == 4 and not {k for k, _ in first.calls} & {k for k, _ in second.calls}
    assert after.search_id == before.search_id and after.best_loss <= before.best_loss
    # Running the first seed again replays its own trials and reruns nothing.
    again = Counting()
    search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=8, objective=again, store=path, config=SearchConfig(seed=0)
    )
    assert again.calls == []


def test_random_twins_are_the_seeds_own_and_rule_trials_are_shared(scored, tmp_path):
    # The seed draws the random baseline's rows: another seed's random trial at the same size is other data.
    path = tmp_path / "search.jsonl"
    kwargs = {"low": LOW, "high": HIGH, "num_samples": 4, "store": path, "random_baseline": True}
    first = Counting()
    search_subset_size(scored, objective=first, config=SearchConfig(seed=0), **kwargs)
    second = Counting()
    result = search_subset_size(scored, objective=second, config=SearchConfig(seed=1), **kwargs)
    assert sorted(second.calls) == sorted((k, "random") for k, s in first.calls if s == "rule")
    assert len(result.curve("random")) == len(result.curve("rule")) == 4
    third = Counting()
    search_subset_size(scored, objective=third, config=SearchConfig(seed=0), **kwargs)
    assert third.calls == []


# The id a search with `seed=3` got while the seed was part of the id: its stored trials resume under seed 3.
STORED_SEED_3_SEARCH_ID = "search-8819d6f60b89"


def test_a_search_stored_under_a_seeded_id_resumes(tmp_path):
    scored, eval_ds, labeling = _pinned_finetuning_search()
    store = LabelStore(tmp_path / "search.jsonl")
    for trial, (k, loss) in enumerate([(2, 1.5), (4, 1.2)], start=1):
        store.append(
            {"kind": "search_trial", "subset_id": f"{STORED_SEED_3_SEARCH_ID}/rule/k={k}", "trial": trial, "k": k}
            | {"search_id": STORED_SEED_3_SEARCH_ID, "loss": loss, "time_s": 1.0, "selection": "rule"}
            | {"low": 2, "high": 8, "search_config": dataclasses.asdict(SearchConfig(seed=3))}
        )
    result = search_subset_size(
        scored,
        low=2,
        high=8,
        num_samples=2,
        store=store,
        eval_dataset=eval_ds,
        labeling_config=labeling,
        config=SearchConfig(seed=3),
    )
    assert (result.best_k, result.best_loss) == (4, 1.2)
    assert len(store.records("search_trial")) == 2


# Trial records of the wrong shape: valid JSON, written by hand or by a tool that got the format wrong.
WRONG_TRIALS = {
    "a string size": {"k": "500"},
    "a string trial number": {"trial": "1"},
    "a string loss": {"loss": "low"},
    "no time": {"time_s": None},
}


@pytest.mark.parametrize("change", list(WRONG_TRIALS.values()), ids=list(WRONG_TRIALS))
def test_a_trial_record_of_the_wrong_shape_is_skipped(scored, tmp_path, caplog, change):
    path = tmp_path / "search.jsonl"
    kwargs = {"low": LOW, "high": HIGH, "num_samples": 4, "store": path}
    result = search_subset_size(scored, objective=Counting(), **kwargs)
    good = LabelStore(path).records("search_trial")[0]
    with open(path, "a") as f:
        f.write(json.dumps({**good, "trial": 99, "k": 500, **change}) + "\n")
    again = Counting()
    with caplog.at_level(logging.WARNING):
        assert search_subset_size(scored, objective=again, **kwargs) == result
    assert again.calls == [] and "line 5" in caplog.text


def test_an_explicit_training_dtype_is_another_search():
    from hf_instructmining import LabelingConfig
    from hf_instructmining.search.api import _derive_search_id

    scored = Dataset.from_dict({"instruction": ["q"], "output": ["a"], "instruct_score": [0.0]})
    ids = {
        _derive_search_id(scored, SearchConfig(), {"labeling": LabelingConfig(model_name_or_path="m", dtype=dtype)})
        for dtype in ("auto", "float32", "bfloat16")
    }
    assert len(ids) == 3


def test_random_baseline_runs_the_same_sizes_and_is_recorded(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    objective = Counting()
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=6, objective=objective, store=store, random_baseline=True
    )
    rule = [k for k, s in objective.calls if s == "rule"]
    random = [k for k, s in objective.calls if s == "random"]
    assert len(rule) == 6 and sorted(random) == sorted(rule)
    assert {t["selection"] for t in result.trace} == {"rule", "random"}
    assert [k for k, _ in result.curve("random")] == sorted(rule)
    assert result.best_loss == min(loss for _, loss in result.curve("rule"))
    assert sorted(r["selection"] for r in store.records("search_trial")) == ["random"] * 6 + ["rule"] * 6


def test_random_baseline_added_to_a_finished_search(scored, tmp_path):
    path = tmp_path / "search.jsonl"
    search_subset_size(scored, low=LOW, high=HIGH, num_samples=4, objective=Counting(), store=path)
    later = Counting()
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=4, objective=later, store=path, random_baseline=True
    )
    assert [s for _, s in later.calls] == ["random"] * 4
    assert len(result.curve("rule")) == len(result.curve("random")) == 4


def test_random_baseline_needs_an_objective_that_takes_selection(scored):
    with pytest.raises(TypeError, match="selection"):
        search_subset_size(scored, low=LOW, high=HIGH, objective=double_descent, random_baseline=True)


def test_small_range_stops_when_every_size_is_tried(scored):
    calls = Counting(curve=lambda k: 1 / k)
    result = search_subset_size(
        scored, low=3, high=8, num_samples=50, objective=calls, config=SearchConfig(resolution=0)
    )
    assert sorted(k for k, _ in calls.calls) == [3, 4, 5, 6, 7, 8]
    assert result.best_k == 8  # the loss falls over this range


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low": 50, "high": 10}, "must not exceed"),
        ({"low": 0, "high": 10}, "at least 1"),
        ({"low": 1, "high": HIGH + 1}, "beyond the data"),
        ({"low": 1.5, "high": 10}, "integer"),
        ({"low": 1, "high": 10, "num_samples": None}, "budget"),
        ({"low": 1, "high": 10, "num_samples": 0}, "num_samples"),
    ],
)
def test_bad_arguments_are_clear_errors(scored, kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_subset_size(scored, objective=double_descent, **kwargs)


def test_high_counts_only_scored_rows():
    ds = Dataset.from_dict({"instruct_score": [0.1, float("nan"), 0.3, None]})
    with pytest.raises(ValueError, match="only 2 row"):
        search_subset_size(ds, low=1, high=3, objective=double_descent)
    assert search_subset_size(ds, low=1, high=2, objective=lambda k: 1.0 / k).best_k == 2


def test_missing_score_column(scored):
    with pytest.raises(ValueError, match="no `instruct_score` column"):
        search_subset_size(scored.rename_column("instruct_score", "s"), low=1, high=10, objective=double_descent)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x"])
def test_non_finite_losses_are_clear_errors(scored, bad):
    with pytest.raises(ValueError, match=r"rule trial at k=\d+"):
        search_subset_size(scored, low=LOW, high=HIGH, objective=lambda k: bad)


def test_built_in_trial_needs_an_eval_set_and_a_config(scored):
    with pytest.raises(ValueError, match="eval_dataset"):
        search_subset_size(scored, low=LOW, high=HIGH)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 1.5}, "resolution"),
        ({"initial_sizes": -1}, "initial"),
        ({"max_concurrent_trials": 0}, "concurrent"),
        ({"method": "grid"}, "bracket"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig(**kwargs)


def test_result_round_trip_and_plot(scored, tmp_path):
    result = search_subset_size(scored, low=LOW, high=HIGH, num_samples=5, objective=Counting(), random_baseline=True)
    assert SearchResult.from_dict(result.to_dict()) == result
    assert set(result.trace[0]) == {"trial", "k", "loss", "time_s", "selection"}
    path = result.plot(tmp_path / "curve.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_finetuning_search_records_and_resumes(tiny_llama_dir, tmp_path):
    from hf_instructmining import LabelingConfig

    rows = [
        {"instruction": f"Give tip number {i} for staying healthy.", "input": "", "output": "Eat well and sleep."}
        for i in range(24)
    ]
    scored = Dataset.from_list([{**row, "instruct_score": float(i)} for i, row in enumerate(rows)])
    eval_ds = Dataset.from_list(rows[:4])
    labeling = LabelingConfig(
        model_name_or_path=tiny_llama_dir,
        device="cpu",
        max_steps=2,
        per_device_train_batch_size=2,
        text_format="text",
        max_length=64,
    )
    store = LabelStore(tmp_path / "search.jsonl")
    kwargs = {"low": 2, "high": 24, "store": store, "eval_dataset": eval_ds, "labeling_config": labeling}
    result = search_subset_size(scored, num_samples=2, random_baseline=True, **kwargs)

    assert [t["selection"] for t in result.trace] == ["rule", "random", "rule", "random"]
    # On a range this narrow (its dearest sweep size costs less than the others together) the default sweep is a
    # plain coarse-to-fine grid: its first two sizes sit half the log range apart, give or take whole rows.
    first, second = result.trace[0]["k"], result.trace[2]["k"]
    assert 0.4 <= abs(math.log(second / first)) / math.log(24 / 2) <= 0.6
    assert all(math.isfinite(t["loss"]) and t["time_s"] > 0 for t in result.trace)
    trials = store.records("search_trial")
    assert len(trials) == 4 and {r["search_id"] for r in trials} == {result.search_id}
    # The labelling callback recorded each finetuning run's evaluation under the trial's subset id.
    assert {r["subset_id"] for r in store.records("eval")} == {r["subset_id"] for r in trials}

    # One more size: the two finished ones come back from the store and only one new model is trained.
    more = search_subset_size(scored, num_samples=3, **kwargs)
    assert len(store.records("search_trial")) == 5
    assert len(more.curve("rule")) == 3 and more.best_loss <= result.best_loss
    assert result.plot(tmp_path / "curve.png").endswith("curve.png")


class InFlight(Counting):
    """A thread-safe `Counting` that records the most calls running at once.

    The first call waits (a few seconds at most) for a second one to start, so a search that can run two trials at
    once visibly does. Every call then takes `seconds`, or, with `outlast`, lasts until that many seconds after the
    first call started.
    """

    def __init__(self, fail_after: int | None = None, seconds: float = 0.005, outlast: float | None = None):
        super().__init__(fail_after)
        self.seconds, self.outlast, self.first = seconds, outlast, None
        self.lock = threading.Condition()
        self.running = self.peak = 0
        self.returned: list[tuple[int, str]] = []

    def __call__(self, k, selection="rule"):
        with self.lock:
            loss = super().__call__(k, selection)  # raises once `fail_after` calls have been made
            self.first = self.first or time.monotonic()
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.lock.notify_all()
            self.lock.wait_for(lambda: self.peak > 1, timeout=5)
        try:
            end = self.first + self.outlast if self.outlast is not None else time.monotonic() + self.seconds
            time.sleep(max(end - time.monotonic(), 0))
        finally:
            with self.lock:
                self.running -= 1
                self.returned.append((k, selection))
        return loss


def _concurrent(n: int, search_id: str = "c") -> SearchConfig:
    return SearchConfig(max_concurrent_trials=n, search_id=search_id)


def test_concurrent_trials_stay_within_the_limit_and_never_repeat_a_size(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    objective = InFlight()
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=20, objective=objective, store=store, config=_concurrent(3)
    )
    assert 1 < objective.peak <= 3
    ks = [k for k, _ in objective.calls]
    assert len(ks) == len(set(ks)) == 20  # the budget counts trials in flight: none started past it
    assert sorted(t["k"] for t in result.trace) == sorted(ks)
    assert [t["trial"] for t in result.trace] == list(range(1, 21))
    assert sorted(r["k"] for r in store.records("search_trial")) == sorted(ks)
    assert all(t["loss"] == double_descent(t["k"]) for t in result.trace)
    assert result.best_loss == min(double_descent(k) for k in ks)


def test_concurrent_search_records_the_running_trials_after_a_failure_and_resumes(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    kwargs = {"low": LOW, "high": HIGH, "num_samples": 12, "store": store, "config": _concurrent(3)}
    first = InFlight(fail_after=5)
    with pytest.raises(RuntimeError, match="interrupted"):
        search_subset_size(scored, objective=first, **kwargs)
    # Every trial that returned a loss is in the store, those that finished after the failure too.
    assert sorted(r["k"] for r in store.records("search_trial")) == sorted(k for k, _ in first.returned)
    assert len(first.returned) == 5

    second = InFlight()
    result = search_subset_size(scored, objective=second, **kwargs)
    assert len(second.calls) == 7 and second.peak <= 3
    assert not {k for k, _ in first.calls} & {k for k, _ in second.calls}
    assert [t["trial"] for t in result.trace] == list(range(1, 13))

    third = InFlight()
    assert search_subset_size(scored, objective=third, **kwargs) == result and third.calls == []


def test_concurrent_trials_running_at_the_time_budget_finish_and_are_recorded(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    budget = 1.0
    # The budget starts before the first trial and every trial lasts past it: the two started at once are the only
    # ones.
    objective = InFlight(outlast=budget + 0.2)
    result = search_subset_size(
        scored,
        low=LOW,
        high=HIGH,
        num_samples=None,
        time_budget_s=budget,
        objective=objective,
        store=store,
        config=_concurrent(2),
    )
    assert objective.peak == 2 and len(objective.calls) == 2
    assert len(result.trace) == len(store.records("search_trial")) == 2


def test_concurrent_random_baseline_twins_every_size_once(scored, tmp_path):
    store = LabelStore(tmp_path / "search.jsonl")
    objective = InFlight()
    result = search_subset_size(
        scored,
        low=LOW,
        high=HIGH,
        num_samples=8,
        objective=objective,
        store=store,
        random_baseline=True,
        config=_concurrent(3),
    )
    rule = [k for k, s in objective.calls if s == "rule"]
    random = [k for k, s in objective.calls if s == "random"]
    assert len(rule) == len(set(rule)) == 8 and sorted(random) == sorted(rule)
    assert 1 < objective.peak <= 3
    assert [k for k, _ in result.curve("random")] == sorted(rule)
    assert sorted(r["selection"] for r in store.records("search_trial")) == ["random"] * 8 + ["rule"] * 8


# The id of a search of the `scored` data with `objective=math.log`, derived before concurrency was an option.
OBJECTIVE_SEARCH_ID = "search-eafa0a4e26b6"


@pytest.mark.parametrize("n", [None, 1, 4])
def test_concurrency_does_not_change_the_search_id(scored, n):
    result = search_subset_size(
        scored, low=LOW, high=HIGH, num_samples=2, objective=math.log, config=SearchConfig(max_concurrent_trials=n)
    )
    assert result.search_id == OBJECTIVE_SEARCH_ID


def test_built_in_trial_runs_one_finetuning_at_a_time(scored):
    with pytest.raises(ValueError, match="search_subset_size_with_ray"):
        search_subset_size(
            scored, low=LOW, high=HIGH, eval_dataset=scored, labeling_config=object(), config=_concurrent(2)
        )


def test_one_trial_at_a_time_runs_in_the_calling_thread(scored):
    # So that Ctrl-C stops the trial itself (a finetuning can take hours), not a wait for it.
    threads = []

    def objective(k):
        threads.append(threading.current_thread())
        return double_descent(k)

    search_subset_size(scored, low=LOW, high=HIGH, num_samples=3, objective=objective)
    assert threads == [threading.main_thread()] * 3


def test_ctrl_c_stops_a_concurrent_search_without_waiting_for_the_trials_in_flight(scored):
    # Python's own Ctrl-C handler, with SIGINT deliverable, whatever a library loaded by an earlier test left in
    # this process (the trial threads inherit the calling thread's signal mask).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    started, release = [], threading.Event()

    def objective(k):
        started.append(k)
        if len(started) == 2:  # both workers busy: the calling thread waits on them when Ctrl-C comes
            os.kill(os.getpid(), signal.SIGINT)
        release.wait(10)
        return double_descent(k)

    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            search_subset_size(scored, low=LOW, high=HIGH, num_samples=10, objective=objective, config=_concurrent(2))
        assert time.monotonic() - start < 5
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert len(started) == 2  # nothing new started after the interrupt
