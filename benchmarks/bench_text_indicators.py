"""Throughput of the text indicators (lengths, MTLD) through `Dataset.map`, against their baselines.

Measured side by side in one process on the same real rows:
- `mtld`: this project's MTLD through `Dataset.map(batched=True)` vs the `lexicalrichness` oracle called in a
  plain Python loop over the same texts (the oracle pays no `map` overhead, so the comparison favours it);
- `input_length`/`output_length`: through `Dataset.map(batched=True)` vs the same indicator unbatched.

Rows come from `../shared/data/alpaca_eval_outputs` when present, else from the project's example data (`hf_instructmining/example_data/`).

Usage:
    python benchmarks/bench_text_indicators.py [--rows 4000] [--repeats 3]
"""

import argparse
import json
import logging
import time
from pathlib import Path

from datasets import Dataset, disable_progress_bars

from hf_instructmining.indicators import MTLD, InputLength, OutputLength
from hf_instructmining.indicators.mtld import tokenize


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "alpaca_eval_outputs"
EXAMPLES = ROOT / "hf_instructmining" / "example_data" / "instructions.jsonl"


def load_rows(limit: int) -> tuple[list[dict], str]:
    if SHARED.is_dir():
        rows = [
            {"instruction": r["instruction"], "input": "", "output": r["output"]}
            for path in sorted(SHARED.glob("*.json"))
            for r in json.loads(path.read_text())
            if tokenize(r["output"])  # the oracle divides by zero on texts without words
        ]
        source = str(SHARED.relative_to(ROOT.parent))
    else:
        rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if tokenize(r["output"])]
        source = str(EXAMPLES.relative_to(ROOT))
    while len(rows) < limit:
        rows = rows + rows
    return rows[:limit], source


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    disable_progress_bars()
    logging.getLogger("hf_instructmining").setLevel(logging.ERROR)

    from lexicalrichness import LexicalRichness

    rows, source = load_rows(args.rows)
    ds = Dataset.from_list(rows)
    texts = ds["output"]
    n = len(ds)
    print(f"{n} rows from {source}; best of {args.repeats} runs\n")

    ours = best_time(lambda: ds.map(MTLD(), batched=True, load_from_cache_file=False), args.repeats)
    oracle = best_time(lambda: [LexicalRichness(t).mtld(threshold=0.72) for t in texts], args.repeats)
    results = [("mtld", "lexicalrichness loop", n / ours, n / oracle)]
    for indicator in (InputLength(), OutputLength()):
        batched = best_time(lambda i=indicator: ds.map(i, batched=True, load_from_cache_file=False), args.repeats)
        single = best_time(lambda i=indicator: ds.map(i, load_from_cache_file=False), args.repeats)
        results.append((indicator.name, "same, unbatched map", n / batched, n / single))

    print(f"{'indicator':<15}{'ours rows/s':>14}{'baseline':>24}{'baseline rows/s':>18}{'ratio':>8}")
    for name, baseline, ours_rate, base_rate in results:
        print(f"{name:<15}{ours_rate:>14,.0f}{baseline:>24}{base_rate:>18,.0f}{ours_rate / base_rate:>7.1f}x")


if __name__ == "__main__":
    main()
