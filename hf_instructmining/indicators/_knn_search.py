"""Exact k-th nearest neighbour L2 distances, tiled so that memory stays bounded at any size.

Squared distances come from one matrix multiply per tile of queries x references (`|q|^2 + |r|^2 - 2 q.r`), then
`topk` within the tile, merged into each query's running k best;
faiss's `IndexFlatL2` does the same search when it is installed and chosen. Either way the k neighbours found are
then measured again directly (`|q - r|`), so that exact duplicates give exactly 0 and no float32 cancellation
is left in the values.
"""

import logging

import numpy as np


logger = logging.getLogger(__name__)

BACKENDS = ("torch", "faiss")
# Bytes of the (queries x references) distance tile computed at once.
_BLOCK_BYTES = 2**28
# Queries per tile. Every tile of queries reads all the references once, so a tile needs many queries to stay
# compute-bound: with 4,096 queries that is 2,048 FLOP per byte of references read, enough for a CPU or a GPU.
# With many references (millions), the references are split instead, so the tile still fits in `_BLOCK_BYTES`.
_QUERY_BLOCK = 4096


def kth_neighbour_distance(
    queries: np.ndarray,
    references: np.ndarray | None = None,
    k: int = 6,
    *,
    backend: str = "torch",
    device: str = "cpu",
) -> np.ndarray:
    """L2 distance from each query to its k-th nearest reference.

    Args:
        queries (`np.ndarray`): `(n, d)` float vectors.
        references (`np.ndarray`, *optional*): `(m, d)` vectors to search; `None` searches the queries themselves
            with each row's own entry excluded (other rows with the same vector still count, at distance 0).
        k (`int`, *optional*, defaults to 6): which neighbour.
        backend (`str`, *optional*, defaults to `"torch"`): `"torch"` (chunked matmul and `topk`, CPU or GPU) or
            `"faiss"` (`IndexFlatL2`, needs `faiss`; slower than torch on the CPUs measured, see `benchmarks/`).
        device (`str`, *optional*, defaults to `"cpu"`): where the torch backend computes.

    Returns:
        `np.ndarray` of shape `(n,)`, float64.

    Raises:
        `ValueError`: fewer than `k` candidate neighbours.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_instructmining.indicators._knn_search import kth_neighbour_distance
    >>> points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    >>> kth_neighbour_distance(points, k=1).tolist()
    [0.0, 5.0, 0.0]
    ```
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got `{backend!r}`.")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exclude_self = references is None
    keys = queries if exclude_self else np.ascontiguousarray(references, dtype=np.float32)
    if keys.ndim != 2 or queries.ndim != 2 or keys.shape[1] != queries.shape[1]:
        raise ValueError(f"Queries {queries.shape} and references {keys.shape} must be 2-D with the same width.")
    available = keys.shape[0] - exclude_self
    if available < k:
        where = "other rows in the dataset" if exclude_self else "reference rows"
        raise ValueError(f"The distance to the {k}-th nearest neighbour needs at least {k} {where}; got {available}.")
    if len(queries) == 0:
        return np.zeros(0)
    if backend == "faiss":
        from ..import_utils import require

        require("faiss", "KNNDistance(backend='faiss')")
    search = _search_faiss if backend == "faiss" else _search_torch
    neighbours = search(queries, keys, k, exclude_self, device)
    # Measure the k neighbours again directly: exact zeros for duplicates, no cancellation error.
    result = np.empty(len(queries))
    for start in range(0, len(queries), 4096):
        q = queries[start : start + 4096, None, :].astype(np.float64)
        distances = np.linalg.norm(q - keys[neighbours[start : start + 4096]], axis=-1)
        result[start : start + 4096] = np.sort(distances, axis=1)[:, k - 1]
    return result


def _tile_shape(num_queries: int, k: int) -> tuple[int, int]:
    """Queries and keys per distance tile: the tile stays within `_BLOCK_BYTES` whatever the dataset's size."""
    rows_per_tile = min(num_queries, _QUERY_BLOCK)
    return rows_per_tile, max(k + 1, _BLOCK_BYTES // (4 * max(rows_per_tile, 1)))


def distance_tile_bytes(num_queries: int, num_keys: int, k: int = 6) -> int:
    """Bytes of the float32 distance tile the torch search holds at its peak, for `num_queries` x `num_keys`: it grows
    with the dataset until it reaches `_BLOCK_BYTES`, then stays there (what memory benchmarks set apart)."""
    rows, keys = _tile_shape(num_queries, k)
    return 4 * rows * min(keys, num_keys)


def _search_torch(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool, device: str) -> np.ndarray:
    import torch

    with torch.inference_mode():
        key_t = torch.from_numpy(keys).to(device)
        key_norms = key_t.square().sum(1)
        rows_per_tile, keys_per_tile = _tile_shape(len(queries), k)
        found = []
        for start in range(0, len(queries), rows_per_tile):
            q = torch.from_numpy(queries[start : start + rows_per_tile]).to(device)
            best_scores = best_ids = None
            for first in range(0, len(keys), keys_per_tile):
                tile = slice(first, first + keys_per_tile)
                # |q - r|^2 up to the per-row constant |q|^2, which does not change the order within a row.
                scores = torch.addmm(key_norms[tile], q, key_t[tile].T, beta=1.0, alpha=-2.0)
                if exclude_self:
                    own = torch.arange(start, start + len(q), device=device) - first
                    inside = (own >= 0) & (own < scores.shape[1])
                    scores[inside.nonzero(as_tuple=True)[0], own[inside]] = float("inf")
                tile_scores, tile_ids = scores.topk(min(k, scores.shape[1]), dim=1, largest=False)
                # Free the tile before the next one is allocated: otherwise two tiles are alive at the peak.
                del scores
                tile_ids += first
                if best_scores is not None:
                    tile_scores, tile_ids = (
                        torch.cat([best_scores, tile_scores], 1),
                        torch.cat([best_ids, tile_ids], 1),
                    )
                    if tile_scores.shape[1] > k:
                        tile_scores, keep = tile_scores.topk(k, dim=1, largest=False)
                        tile_ids = tile_ids.gather(1, keep)
                best_scores, best_ids = tile_scores, tile_ids
            found.append(best_ids.cpu())
        return torch.cat(found).numpy()


def _search_faiss(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool, device: str) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(keys)
    _, found = index.search(queries, k + exclude_self)
    if not exclude_self:
        return found
    # Drop each row's own entry; when duplicates pushed it out of the list, drop the farthest instead.
    own = np.arange(len(queries))[:, None]
    is_own = found == own
    drop = np.where(is_own.any(1), is_own.argmax(1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(len(found)), drop] = False
    return found[keep].reshape(len(found), k)
