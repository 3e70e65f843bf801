"""Peak memory of scoring does not grow with the dataset, apart from the KNN embedding matrix itself.

Scores datasets of growing size with the text indicators and KNN-6 on MiniLM (`compute_indicators`), each in a fresh
child process that loads the dataset from disk (memory-mapped, as `load_dataset` and `load_from_disk` give it), and
prints each run's own peak resident memory (`VmHWM`) beside the size of its embedding matrix (n x 384 float32).
Scoring streams: `Dataset.map` writes the per-row indicators batch by batch, and KNN embeds the dataset a chunk of
rows at a time into one preallocated matrix, so what grows is that matrix and nothing else. The exact KNN search
adds one distance tile (queries x keys in float32), which grows with the dataset up to its cap (4,096 x 16,384,
256 MiB, reached at 16,384 rows) and stays there; the table prints it beside the matrix.

Rows: real AlpacaEval instructions and the first sentence of real answers (`../shared/data/alpaca_eval_outputs`),
repeated with a variant number so that no two rows are the same text.

    python benchmarks/bench_memory.py --sizes 10000 100000
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peak_memory import peak_rss_bytes

from hf_instructmining.indicators._knn_search import distance_tile_bytes


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"
INDICATORS = ["input_length", "output_length", "mtld", "compression_ratio", "knn_6"]


def build(n: int, folder: Path) -> None:
    import datasets

    real = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    first_sentence = [re.split(r"(?<=[.!?])\s", r["output"].strip(), maxsplit=1)[0][:200] for r in real]

    def rows():
        for i in range(n):
            j = i % len(real)
            yield {"instruction": real[j]["instruction"], "output": f"{first_sentence[j]} (variant {i // len(real)})"}

    datasets.Dataset.from_generator(rows).save_to_disk(str(folder))


def child(folder: str) -> None:
    """Score the saved dataset; print the peak RSS and the embedding matrix size as JSON."""
    import datasets

    from hf_instructmining import compute_indicators
    from hf_instructmining.offline import minilm_path

    ds = datasets.load_from_disk(folder)
    start = time.perf_counter()
    scored = compute_indicators(ds, INDICATORS, models={"knn": minilm_path()})
    seconds = time.perf_counter() - start
    assert len(scored) == len(ds)
    peak = peak_rss_bytes()
    print(
        json.dumps(
            {
                "rows": len(ds),
                "peak": peak,
                "embeddings": len(ds) * 384 * 4,
                "tile": distance_tile_bytes(len(ds), len(ds)),
                "seconds": seconds,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / f"rows-{n}"
            build(n, folder)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(folder)], check=True, capture_output=True, text=True
            ).stdout
            run = json.loads(out.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"{run['rows']:>8,} rows | peak RSS {run['peak'] / 2**20:7.0f} MiB | embedding matrix "
                f"{run['embeddings'] / 2**20:6.0f} MiB | peak without it {(run['peak'] - run['embeddings']) / 2**20:7.0f} MiB"
                f" | distance tile {run['tile'] / 2**20:4.0f} MiB | {run['seconds']:.0f} s ({run['rows'] / run['seconds']:.0f}"
                " rows/s)",
                flush=True,
            )
    small, large = runs[0], runs[-1]
    ratio = (large["peak"] - large["embeddings"]) / (small["peak"] - small["embeddings"])
    print(
        f"ratio       peak RSS apart from the embedding matrix, {large['rows']:,} against {small['rows']:,} rows: "
        f"{ratio:.2f}x (target < 1.3x); peak RSS itself {large['peak'] / small['peak']:.2f}x"
    )


if __name__ == "__main__":
    main()
