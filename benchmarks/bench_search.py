"""How many finetuning runs, and how many rows trained, a subset-size search needs: the default against baselines.

Every trial of a search is a finetuning run on k rows, so what a search costs is its number of trials and the sum
of their k (rows trained, a proxy for compute). Each method searches k on a curve of eval loss against k, with
evaluation noise at zero and at the seed-to-seed level measured by this project's labelling runs, over many seeds,
and we count what it spends until its answer is within 2% of the best loss.

Curves (`CURVES`), eval losses at a realistic scale (1 to 2.7), k in [100, 100,000] unless said otherwise:
- paper: the paper's double descent (Section 5.2), down to its optimum at exactly k = 2,532, up to a peak near
  10,000, down again to a worse second minimum near 40,000.
- paper, moved: the same curve moved by up to 0.4 decade either way (optimum between 1,008 and 6,360: a spacing
  of four log-spaced sizes over the range), so that a method whose first sizes are fixed is not judged on where
  they happen to fall.
- early minimum: a shallow local minimum near 300 rows, next to the cheap start, 10% above the best near 6,000.
- keep everything: a data scaling law, 1 + 1.5 (k / 100)^-0.3; only the top third of a decade is within 2%.
- narrow dip: a gently falling curve with one dip 8% deep and a tenth of a decade wide, somewhere in [400, 25,000].
- replication: the curve `experiments/replication` measured in its first protocol (`REPLICATION_RUNS`), k in
  [16, 128], interpolated on log k between its finetuning runs (means over the training seeds where it has
  several). Its whole range lies within 2.1% of its best loss, so it is also judged at 0.5% (two noise sds).
Each seed moves the features of the synthetic curves but the first a little (up to a tenth of a decade; the dip
anywhere in its range), so that no method profits from where they sit relative to its own sizes.

Noise: each trial observes the curve plus Gaussian noise of sd 0 or `--noise` (by default the pooled seed-to-seed
sd of the replication's rule and random runs, 3 training seeds at each of 3 sizes: 0.0068). With noise, a
method's answer after n trials is the size with the lowest *observed* loss, and it is judged by the *true*
(noiseless) loss there: a size that merely looked good by luck does not count. "Trials to get within 2%" is the
first n from which the answer stays within 2% of the true best loss until the method stops (at the budget, or
when every candidate size is tried); rows trained are the sum of k over those n trials. A run whose final answer
is outside 2% is a miss and counts as the whole budget.

Methods:
- default: `search_subset_size` with its defaults (`SearchConfig()`: the bracketing search).
- BlendSearch, cost-aware: `search_subset_size(config=SearchConfig(method="blendsearch"))`: FLAML's BlendSearch
  with a trial's cost its size, its low-cost start at `low`, and 4 log-spaced initial sizes.
- FLAML BlendSearch, defaults: `flaml.BlendSearch(metric, mode, space={"k": lograndint(low, high + 1)}, seed)`.
- grid, coarse to fine: log-spaced sizes in van der Corput order (1/2, 1/4, 3/4, 1/8, 5/8, ... of the log
  range, shifted by a seeded random fraction), so that every prefix of 2^m trials is an even grid.
- random: sizes drawn log-uniformly (seeded).

It also checks the 40-trial search on the paper curve without noise: the default's best k should be within 10%
of 2,532 and its loss within 2e-3 of the optimum, for every seed. `--concurrency` instead measures how the
searchers cope with several trials at once (`SearchConfig(max_concurrent_trials=n)`): on the moved paper curve,
trials of 2-6 ms that finish in random order, how many seeds end within 2% of the best loss at 20 and 40 trials.

    python benchmarks/bench_search.py                      # 100 seeds, budget 60, every method
    python benchmarks/bench_search.py --quick              # 5 seeds, no BlendSearch rows (about a minute)
    python benchmarks/bench_search.py --seeds 40 --first-seed 40   # seeds 40-79, to check on other seeds
    python benchmarks/bench_search.py --curves paper --methods default grid --seeds 50
    python benchmarks/bench_search.py --concurrency --seeds 10
"""

import argparse
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from hf_instructmining import SearchConfig, search_subset_size


PAPER_K = 2_532
TOLERANCE = 0.02
# The default searches a grid of sizes 5% apart: a size it tries is at most 2.5% off the one a baseline tries.
ROUNDING = 0.025
# The eval losses of the rule-selected finetuning runs of `experiments/replication`'s first protocol, by k (LoRA
# on SmolLM2-135M-Instruct, AlpacaEval responses of ten models; `experiments/replication/labels-cpu.jsonl` as
# committed in 8e1654a): its search's trials, and three training seeds at 16, 48 and 128 rows (the search trained
# with the first of them, so its k = 16 run is that seed's).
REPLICATION_RUNS = {
    16: (2.603785, 2.603753, 2.601913),
    26: (2.599563,),
    38: (2.586319,),
    48: (2.588839, 2.576139, 2.578610),
    63: (2.562596,),
    84: (2.563802,),
    107: (2.558242,),
    128: (2.551592, 2.555416, 2.547778),
}
# The pooled seed-to-seed sd of the same protocol's comparison runs: rule-selected and random rows at 16, 48 and
# 128 rows, three training seeds each.
REPLICATION_NOISE = 0.006786


@dataclass
class Curve:
    """A family of true eval-loss curves over [low, high]; `loss(k, shift)` is vectorised over an array of k."""

    loss: Callable[[np.ndarray, float], np.ndarray]
    low: int = 100
    high: int = 100_000
    tolerance: float = TOLERANCE


def _paper(k: np.ndarray, centre: float) -> np.ndarray:
    x = np.log10(k)
    return (
        1.20
        + 0.35 * np.exp(-(x - 2) / 0.6)
        - 0.18 * np.exp(-(((x - centre) / 0.35) ** 2))
        - 0.06 * np.exp(-(((x - 4.6) / 0.3) ** 2))
    )


def _paper_centre() -> float:
    """Where the paper curve's basin must sit for its minimum to be exactly at k = 2,532 (bisection on the slope)."""
    x = math.log10(PAPER_K)
    low, high = 3.0, 3.6
    for _ in range(60):
        centre = (low + high) / 2
        slope = (_paper(np.array([10 ** (x + 1e-6)]), centre) - _paper(np.array([10 ** (x - 1e-6)]), centre))[0]
        low, high = (centre, high) if slope > 0 else (low, centre)
    return (low + high) / 2


PAPER_CENTRE = _paper_centre()


def paper(k, shift):
    return _paper(k, PAPER_CENTRE)


def paper_moved(k, shift):
    return _paper(k / 10 ** (4 * shift), PAPER_CENTRE)


def early_minimum(k, shift):
    x = np.log10(k) - shift
    return (
        1.25 - 0.10 * np.exp(-(((x - 2.45) / 0.22) ** 2)) - 0.26 * np.exp(-(((x - 3.8) / 0.40) ** 2)) + 0.04 * (x - 2)
    )


def keep_everything(k, shift):
    return 1.0 + 1.5 * (k / 100 / 10**shift) ** -0.3


def narrow_dip(k, shift):
    x = np.log10(k)
    centre = 3.5 + 9 * shift  # over [2.6, 4.4] as the shift runs over [-0.1, 0.1]
    return 1.45 - 0.03 * (x - 2) - 0.12 * np.exp(-(((x - centre) / 0.10) ** 2))


def replication_curve(k, shift):
    ks = np.array(sorted(REPLICATION_RUNS), dtype=float)
    means = np.array([np.mean(REPLICATION_RUNS[int(size)]) for size in ks])
    return np.interp(np.log(k), np.log(ks), means)


CURVES = {
    "paper": Curve(paper),
    "paper, moved": Curve(paper_moved),
    "early minimum": Curve(early_minimum),
    "keep everything": Curve(keep_everything),
    "narrow dip": Curve(narrow_dip),
    "replication": Curve(replication_curve, low=16, high=128),
    "replication, 0.5%": Curve(replication_curve, low=16, high=128, tolerance=0.005),
}


# Methods: each runs one search of at most `budget` trials on `observe(k) -> observed loss`, never the same size
# twice; the trials are the calls to `observe`.


def default_search(observe, low, high, seed, budget, **options) -> None:
    config = SearchConfig(seed=seed, **options)
    search_subset_size(_scored(high), low=low, high=high, num_samples=budget, objective=observe, config=config)


def blendsearch_cost_aware(observe, low, high, seed, budget) -> None:
    default_search(observe, low, high, seed, budget, method="blendsearch")


def flaml_defaults(observe, low, high, seed, budget) -> None:
    from hf_instructmining.search.strategy import load_flaml

    flaml = load_flaml()
    searcher = flaml.BlendSearch(
        metric="loss", mode="min", space={"k": flaml.tune.lograndint(low, high + 1)}, seed=seed
    )
    seen, calls, empty = {}, 0, 0
    while len(seen) < budget and empty < 2_000:
        calls += 1
        point = searcher.suggest(str(calls))
        if point is None:
            empty += 1
            continue
        k = int(point["k"])
        if k not in seen:  # a repeated size is answered from memory, as the project's loop does
            seen[k] = observe(k)
        searcher.on_trial_complete(str(calls), {"loss": seen[k], "config": point})


def van_der_corput(i: int) -> float:
    """The i-th point of the base-2 van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, 5/8, ..."""
    value, denominator = 0.0, 1.0
    while i:
        denominator *= 2
        i, bit = divmod(i, 2)
        value += bit / denominator
    return value


def grid(observe, low, high, seed, budget) -> None:
    shift = np.random.default_rng(seed).uniform()
    span = math.log(high) - math.log(low)
    sizes = (
        min(max(round(math.exp(math.log(low) + ((van_der_corput(i) + shift) % 1) * span)), low), high)
        for i in range(100 * budget)
    )
    _observe_new(observe, sizes, budget)


def random_search(observe, low, high, seed, budget) -> None:
    rng = np.random.default_rng(seed)
    draws = np.round(np.exp(rng.uniform(math.log(low), math.log(high + 1), 100 * budget))).astype(int)
    _observe_new(observe, (int(k) for k in draws.clip(low, high)), budget)


def _observe_new(observe, sizes, budget: int) -> None:
    """Observe the first `budget` distinct sizes (a grid or a random draw does not pay twice for one size)."""
    tried: set[int] = set()
    for k in sizes:
        if len(tried) == budget:
            break
        if k not in tried:
            tried.add(k)
            observe(k)


METHODS = {
    "default": default_search,
    "BlendSearch, cost-aware": blendsearch_cost_aware,
    "FLAML BlendSearch, defaults": flaml_defaults,
    "grid, coarse to fine": grid,
    "random": random_search,
}
SLOW = ("BlendSearch, cost-aware", "FLAML BlendSearch, defaults")


def _scored(high: int) -> Dataset:
    if high not in _SCORED:
        _SCORED[high] = Dataset.from_dict({"instruct_score": np.linspace(-1, 1, high)})
    return _SCORED[high]


_SCORED: dict[int, Dataset] = {}


def run_once(method, curve: Curve, seed: int, noise: float, budget: int) -> tuple[int, int, bool]:
    """(trials until the answer stays within tolerance, rows trained in them, missed) for one seed."""
    shift = np.random.default_rng([1, seed]).uniform(-0.1, 0.1)
    true = curve.loss(np.arange(curve.low, curve.high + 1), shift)
    target = true.min() * (1 + curve.tolerance)
    rng = np.random.default_rng([2, seed])
    observed: list[tuple[int, float]] = []

    def observe(k: int, selection: str = "rule") -> float:
        loss = float(true[k - curve.low] + (rng.normal(0, noise) if noise else 0.0))
        observed.append((k, loss))
        return loss

    method(observe, curve.low, curve.high, seed, budget)
    answers, best = [], None
    for k, loss in observed:
        if best is None or (loss, k) < best:
            best = (loss, k)
        answers.append(best[1])
    good = [true[k - curve.low] <= target for k in answers]
    n = len(good)
    while n > 0 and good[n - 1]:
        n -= 1
    missed = n == len(good)
    trials = budget if missed else n + 1
    return trials, sum(k for k, _ in observed[:trials]), missed


def summarize(runs) -> dict:
    trials = np.array([t for t, _, _ in runs])
    rows = np.array([r for _, r, _ in runs])
    return {
        "trials": float(np.median(trials)),
        "trials p90": float(np.percentile(trials, 90)),
        "rows": float(np.median(rows)),
        "rows p90": float(np.percentile(rows, 90)),
        "misses": sum(m for _, _, m in runs),
    }


def _verdict(trials: float, rows: float) -> str:
    """ "yes" when the default needs fewer median trials and rows than a baseline, "tie" when it needs no more."""
    if trials > 1 and rows > 1:
        return "yes"
    if trials >= 1 and (rows >= 1 or (trials == 1 and rows >= 1 - ROUNDING)):
        return "tie"
    return "NO"


def check_paper_40(seeds: range) -> None:
    """The 40-trial default search on the paper curve (no noise): best k within 10% of 2,532, loss within 2e-3."""
    curve = CURVES["paper"]
    true = curve.loss(np.arange(curve.low, curve.high + 1), 0.0)
    best = true.min()
    passed, worst_k, worst_gap = 0, 0.0, 0.0
    for seed in seeds:
        result = search_subset_size(
            _scored(curve.high),
            low=curve.low,
            high=curve.high,
            num_samples=40,
            objective=lambda k: float(true[k - curve.low]),
            config=SearchConfig(seed=seed),
        )
        off_k, gap = abs(result.best_k / PAPER_K - 1), result.best_loss - best
        passed += off_k <= 0.10 and gap <= 2e-3
        worst_k, worst_gap = max(worst_k, off_k), max(worst_gap, gap)
    print(
        f"\n40-trial default search on the paper curve: {passed}/{len(seeds)} seeds within 10% of k = {PAPER_K:,} and "
        f"2e-3 of the optimum loss {best:.4f} (worst: k off by {worst_k:.1%}, loss {worst_gap:.1e} above)"
    )


def check_concurrency(seeds: int, method: str) -> None:
    """With n trials at once, sizes are proposed before the running trials' losses are back: how much that costs."""
    curve = CURVES["paper, moved"]
    print(f"\n{method}, several trials at once, paper curve moved (trials of 2-6 ms, random order): seeds within 2%")
    for budget, widths in ((40, (1, 2, 4, 8)), (20, (1, 4, 8, 16))):
        cells = []
        for n in widths:
            hits = 0
            for seed in range(seeds):
                true = curve.loss(
                    np.arange(curve.low, curve.high + 1), np.random.default_rng([1, seed]).uniform(-0.1, 0.1)
                )
                target = true.min() * (1 + TOLERANCE)
                lock, rng = threading.Lock(), np.random.default_rng([3, seed])

                def observe(k: int, lock=lock, rng=rng, true=true) -> float:
                    with lock:
                        seconds = rng.uniform(0.002, 0.006)
                    time.sleep(seconds)
                    return float(true[k - curve.low])

                result = search_subset_size(
                    _scored(curve.high),
                    low=curve.low,
                    high=curve.high,
                    num_samples=budget,
                    objective=observe,
                    config=SearchConfig(method=method, seed=seed, max_concurrent_trials=n),
                )
                hits += result.best_loss <= target
            cells.append(f"{n} at once: {hits}/{seeds}")
        print(f"  {budget} trials: " + ", ".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="Seeds first-seed, first-seed + 1, ... (to check on other seeds)."
    )
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--noise", type=float, default=None, help="Noise sd (default: the replication's, 0.0068).")
    parser.add_argument("--curves", nargs="+", default=list(CURVES), choices=list(CURVES), metavar="CURVE")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--quick", action="store_true", help="5 seeds and no BlendSearch rows.")
    parser.add_argument("--concurrency", action="store_true", help="Only the several-trials-at-once check.")
    args = parser.parse_args()
    if args.quick:
        args.seeds = min(args.seeds, 5)
        args.methods = [m for m in args.methods if m not in SLOW]
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.concurrency:
        for method in ("bracket", "blendsearch"):
            check_concurrency(args.seeds, method)
        return
    noise = REPLICATION_NOISE if args.noise is None else args.noise
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(
        f"Within {TOLERANCE:.0%} of the best true loss (0.5% where marked), seeds {seeds.start}-{seeds.stop - 1}, budget {args.budget} "
        f"trials; noise sd 0 and {noise:.4f}. Medians (90th percentiles) over seeds; a miss counts as the budget."
    )
    summary = []
    for name in args.curves:
        curve = CURVES[name]
        for sd in (0.0, noise):
            start = time.perf_counter()
            results = {
                method: summarize([run_once(METHODS[method], curve, s, sd, args.budget) for s in seeds])
                for method in args.methods
            }
            print(
                f"\n{name}, k in [{curve.low:,}, {curve.high:,}], noise sd {sd:.4f} ({time.perf_counter() - start:.0f} s)"
            )
            print(f"  {'method':<28} {'trials':>13} {'rows trained':>22} {'misses':>7}")
            for method, r in results.items():
                print(
                    f"  {method:<28} {r['trials']:>5.1f} ({r['trials p90']:>5.1f}) "
                    f"{r['rows']:>10,.0f} ({r['rows p90']:>9,.0f}) {r['misses']:>7}"
                )
            if "default" in results:
                summary.append((name, sd, results))
    baselines = [m for m in ("grid, coarse to fine", "random") if m in args.methods]
    if summary and baselines:
        print(
            "\nBaseline / default, medians (above 1: the default needs fewer); trials | rows trained. Ahead: every "
            f"ratio above 1; tie: none below 1, or rows within {ROUNDING:.1%} at equal trials (the default rounds "
            "sizes to its 5% grid)"
        )
        print(f"  {'curve':<20} {'noise':>6} " + " ".join(f"{m:>26}" for m in baselines) + "  default ahead")
        for name, sd, results in summary:
            ours = results["default"]
            cells, verdicts = [], []
            for method in baselines:
                theirs = results[method]
                trials, rows = theirs["trials"] / ours["trials"], theirs["rows"] / ours["rows"]
                verdicts.append(_verdict(trials, rows))
                cells.append(f"{trials:>11.2f}x | {rows:>5.2f}x    ")
            verdict = "NO" if "NO" in verdicts else "tie" if "tie" in verdicts else "yes"
            print(f"  {name:<20} {sd:>6.4f} " + " ".join(f"{c:>26}" for c in cells) + f"  {verdict}")
    if "default" in args.methods and "paper" in args.curves:
        check_paper_40(seeds)


if __name__ == "__main__":
    main()
