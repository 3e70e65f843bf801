"""Exact k-th nearest neighbour distances over random unit vectors: this project vs faiss `IndexFlatL2`.

Both searches run side by side in one process (best of `--repeat`), so the ratio holds on a busy machine; the
peak memory of each is measured in a fresh child process (its own peak resident set size, data and imports included).

    python benchmarks/bench_knn.py --n 50000 --dim 384 --k 6
"""

import argparse
import multiprocessing
import time

import numpy as np
from _peak_memory import peak_rss_bytes


def make_data(n: int, dim: int) -> np.ndarray:
    points = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def project(points: np.ndarray, k: int) -> np.ndarray:
    from hf_instructmining.indicators._knn_search import kth_neighbour_distance

    return kth_neighbour_distance(points, k=k, backend="torch")


def faiss_flat(points: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    squared, _ = index.search(points, k + 1)  # the first hit is the point itself
    return np.sqrt(np.maximum(squared[:, k], 0))


METHODS = {"project": project, "faiss": faiss_flat}


def _peak_child(name: str, n: int, dim: int, k: int, queue) -> None:
    import torch  # noqa: F401  (imports count in both peaks alike)

    points = make_data(n, dim)
    METHODS[name](points, k)
    queue.put(peak_rss_bytes() / 2**30)


def peak_memory_gib(name: str, n: int, dim: int, k: int) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_child, args=(name, n, dim, k, queue))
    child.start()
    peak = queue.get()
    child.join()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import torch

    points = make_data(args.n, args.dim)
    print(f"{args.n} x {args.dim} unit vectors, k={args.k}, torch threads {torch.get_num_threads()}")
    best, values = {}, {}
    for _ in range(args.repeat):
        for name, method in METHODS.items():
            start = time.perf_counter()
            values[name] = method(points, args.k)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    diff = float(np.abs(values["project"] - values["faiss"]).max())
    for name in METHODS:
        print(f"{name:<8} {best[name]:7.2f} s   peak memory {peak_memory_gib(name, args.n, args.dim, args.k):.2f} GiB")
    print(f"project / faiss time: {best['project'] / best['faiss']:.2f}x   max abs difference {diff:.1e}")


if __name__ == "__main__":
    main()
