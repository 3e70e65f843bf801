"""Peak memory of `instructmining score` on a JSON Lines file does not grow with its rows (cheap text indicators).

Writes a JSON Lines file of each size, then runs the command on it in a fresh child process per size and per way of
scoring (side by side, in one run), and prints each child's own peak resident memory (`VmHWM`, see
`_peak_memory.py`) and the ratio of the largest size to the smallest. The path is the user's: `datasets` reads the
file into a memory-mapped Arrow cache, the indicators run batch by batch (`Dataset.map`, or shard by shard with
`--checkpoint_dir`), the summary reads the columns in chunks and the parquet writer writes in batches; nothing holds
a whole column as Python objects.

Rows: real AlpacaEval instructions and whole real answers (`../shared/data/alpaca_eval_outputs`), repeated with a
variant number so that no two rows are the same text. Indicators: `input_length` and `output_length` (whitespace
words), `mtld` and `compression_ratio`.

Two peaks per child: the anonymous resident memory (`RssAnon`, sampled every 10 ms: what the process holds itself,
the target's measure) and `VmHWM`, which also counts the pages of the memory-mapped Arrow files that were read. Those
grow with the rows read (the whole input is read twice: to score it and to write it), but they are page cache that
the kernel reclaims under pressure, not memory the job needs.

    python benchmarks/bench_memory_text.py --sizes 100000 1000000
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peak_memory import AnonymousPeak, peak_rss_bytes


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"
INDICATORS = "input_length,output_length,mtld,compression_ratio"
MODES = ("map", "checkpoint")


def build(n: int, path: Path) -> None:
    real = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = real[i % len(real)]
            variant = f" (variant {i // len(real)})"
            f.write(json.dumps({"instruction": row["instruction"] + variant, "output": row["output"]}) + "\n")


def child(path: str, mode: str, folder: str) -> None:
    """Score the file with the command line; print the peak RSS and the time as JSON."""
    from hf_instructmining.cli import main

    args = ["score", "--dataset", path, "--indicators", INDICATORS, "--output", str(Path(folder) / "scored.parquet")]
    if mode == "checkpoint":
        args += ["--checkpoint_dir", str(Path(folder) / "checkpoint")]
    start = time.perf_counter()
    with AnonymousPeak() as anonymous:
        code = main(args)
    seconds = time.perf_counter() - start
    assert code == 0, code
    print(json.dumps({"peak": peak_rss_bytes(), "anonymous": anonymous.peak, "seconds": seconds}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"rows-{n}.jsonl"
            build(n, path)
            size = path.stat().st_size
            for mode in args.modes:
                folder = Path(tmp) / f"{mode}-{n}"
                folder.mkdir()
                # A cache of its own: every child converts its file to Arrow, as a first run does.
                env = {
                    **os.environ,
                    "HF_DATASETS_CACHE": str(folder / "cache"),
                    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                }
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), mode, str(folder)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    sys.exit(f"{mode} at {n:,} rows failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs[(mode, n)] = run
                print(
                    f"{mode:>10} | {n:>9,} rows ({size / 2**20:5.0f} MiB of JSON Lines) | peak anonymous RSS "
                    f"{run['anonymous'] / 2**20:5.0f} MiB | peak RSS with mapped file pages {run['peak'] / 2**20:5.0f} "
                    f"MiB | {run['seconds']:5.0f} s ({n / run['seconds']:,.0f} rows/s)",
                    flush=True,
                )
    small, large = min(args.sizes), max(args.sizes)
    for mode in args.modes:
        ratio = runs[(mode, large)]["anonymous"] / runs[(mode, small)]["anonymous"]
        mapped = runs[(mode, large)]["peak"] / runs[(mode, small)]["peak"]
        print(
            f"ratio {mode:>10}: peak anonymous RSS at {large:,} against {small:,} rows: {ratio:.2f}x (target < 1.3x); "
            f"with the mapped file pages read (page cache) {mapped:.2f}x"
        )


if __name__ == "__main__":
    main()
