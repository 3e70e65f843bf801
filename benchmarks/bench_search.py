"""How many trials BlendSearch needs to find a good subset size, against grid search and random search.

On synthetic eval-loss-against-size curves (no finetuning), each method searches k in [100, 100,000] and we count
the trials until one lands within 2% of the best loss on the range. Trials are what a real search pays for (one
finetuning run each); the summed sizes of those trials (rows trained on, a proxy for compute) are reported too,
since BlendSearch starts from the cheapest size on purpose.

- BlendSearch: `search_subset_size` with a synthetic objective (defaults: log scale, 5% resolution, 3 initial
  sizes), one seed per run, up to `--budget` trials; and the same with `initial_sizes=0`, which starts from the
  cheapest size alone (the plain low-cost start).
- Grid search, refined coarse to fine: log-spaced sizes in van der Corput order (1/2, 1/4, 3/4, 1/8, 5/8, ... of
  the log range), so every prefix of 2^m trials is an even grid and no trial is wasted when the grid is refined;
  the trials until one lands within 2%. Each seed shifts the grid by a random fraction of the range, so that no
  method gains from where the optimum happens to sit relative to round sizes.
- Random search: sizes drawn log-uniformly (seeded) until one lands within 2%.

Medians over seeds; a run that never gets within 2% counts as the budget (reported as a miss).

    python benchmarks/bench_search.py                 # 20 seeds, budget 100
    python benchmarks/bench_search.py --seeds 5 --budget 60
"""

import argparse
import logging
import math
import time

import numpy as np
from datasets import Dataset

from hf_instructmining import SearchConfig, search_subset_size


LOW, HIGH = 100, 100_000
TOLERANCE = 0.02


def paper_shaped(k: int) -> float:
    """Down to a best size near 2,500, up to a peak near 10,000, down again to a worse second minimum."""
    x = math.log10(k)
    return (
        0.95
        + 0.35 * math.exp(-(x - 2) / 0.6)
        - 0.18 * math.exp(-(((x - 3.4) / 0.35) ** 2))
        - 0.06 * math.exp(-(((x - 4.6) / 0.3) ** 2))
    )


def early_trap(k: int) -> float:
    """A shallow local minimum near 300 rows, right next to the cheap start, and the best size near 5,000."""
    x = math.log10(k)
    return (
        1.2 - 0.20 * math.exp(-(((x - 2.5) / 0.3) ** 2)) - 0.40 * math.exp(-(((x - 3.7) / 0.35) ** 2)) + 0.03 * (x - 2)
    )


CURVES = {"paper-shaped double descent": paper_shaped, "early local minimum": early_trap}


def first_hit(ks, curve, target) -> tuple[int | None, int]:
    """(trials until a size is within the target, rows trained on until then); (None, all rows) when never."""
    rows = 0
    for n, k in enumerate(ks, start=1):
        rows += k
        if curve(k) <= target:
            return n, rows
    return None, rows


def blendsearch(curve, target, seed, budget, scored, initial_sizes=3):
    config = SearchConfig(seed=seed, initial_sizes=initial_sizes)
    result = search_subset_size(scored, low=LOW, high=HIGH, num_samples=budget, objective=curve, config=config)
    return first_hit([t["k"] for t in result.trace], curve, target)


def van_der_corput(i: int) -> float:
    """The i-th point of the base-2 van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, 5/8, ..."""
    value, denominator = 0.0, 1.0
    while i:
        denominator *= 2
        i, bit = divmod(i, 2)
        value += bit / denominator
    return value


def grid(curve, target, seed, budget):
    shift = np.random.default_rng(seed).uniform()
    span = math.log(HIGH) - math.log(LOW)
    ks = [round(math.exp(math.log(LOW) + ((van_der_corput(i) + shift) % 1) * span)) for i in range(budget)]
    return first_hit([min(max(k, LOW), HIGH) for k in ks], curve, target)


def random_search(curve, target, seed, budget):
    rng = np.random.default_rng(seed)
    ks = np.round(np.exp(rng.uniform(math.log(LOW), math.log(HIGH + 1), budget))).astype(int).clip(LOW, HIGH)
    return first_hit([int(k) for k in ks], curve, target)


def summarize(runs, budget):
    trials = [n if n is not None else budget for n, _ in runs]
    rows = [r for _, r in runs]
    misses = sum(n is None for n, _ in runs)
    return float(np.median(trials)), float(np.median(rows)), misses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    scored = Dataset.from_dict({"instruct_score": np.linspace(-1, 1, HIGH)})
    print(
        f"k in [{LOW:,}, {HIGH:,}], within {TOLERANCE:.0%} of the best loss, {args.seeds} seeds, budget {args.budget}"
    )
    for name, curve in CURVES.items():
        best = min(curve(k) for k in range(LOW, HIGH + 1))
        target = best * (1 + TOLERANCE)
        seeds, budget = range(args.seeds), args.budget
        start = time.perf_counter()
        methods = {
            "BlendSearch": summarize([blendsearch(curve, target, s, budget, scored) for s in seeds], budget),
            "BlendSearch, initial_sizes=0": summarize(
                [blendsearch(curve, target, s, budget, scored, initial_sizes=0) for s in seeds], budget
            ),
        }
        seconds = time.perf_counter() - start
        methods["grid, coarse to fine"] = summarize([grid(curve, target, s, budget) for s in seeds], budget)
        methods["random"] = summarize([random_search(curve, target, s, budget) for s in seeds], budget)
        print(f"\n{name}: best loss {best:.4f} ({seconds:.1f} s in the two BlendSearch rows)")
        print(f"  {'method':<30} {'median trials':>14} {'misses':>7} {'median rows trained':>20}")
        for method, (trials, rows, misses) in methods.items():
            print(f"  {method:<30} {trials:>14.1f} {misses:>7} {rows:>20,.0f}")
        bs_trials, bs_rows, _ = methods["BlendSearch"]
        print(
            "  ratios to BlendSearch (trials | rows trained): "
            + ", ".join(
                f"{method} {trials / bs_trials:.2f} | {rows / bs_rows:.2f}"
                for method, (trials, rows, _) in methods.items()
                if method != "BlendSearch"
            )
        )


if __name__ == "__main__":
    main()
