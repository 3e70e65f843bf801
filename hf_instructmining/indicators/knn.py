"""`knn_{k}` (`knn_6` in the paper): how far an example sits from its k-th nearest neighbour.

InstructMining (arXiv 2307.06290, Sec. 3.1) embeds each example with a sentence encoder
(`sentence-transformers/all-MiniLM-L6-v2`) and takes the L2 distance to its k-th nearest neighbour in the
dataset, the example itself excluded. Embeddings match sentence-transformers: mean pooling over the attention
mask, then L2 normalisation, with the model's `max_seq_length` (inputs longer are cut at the end).

The neighbours come from the whole dataset, so the column is computed in two steps, embed then search:
[`KNNDistance.compute_dataset`] does both (and `compute_indicators` calls it). As a plain `Dataset.map`
function, which sees one batch at a time, `KNNDistance` needs a fixed `reference` set to search instead.
"""

import json
import logging
from typing import Any

import numpy as np

from ..formats import InstructionPairs, extract_pairs
from ..loading import model_file
from ._batching import encode_truncated, inference, pad, run_in_batches
from ._knn_search import BACKENDS, kth_neighbour_distance
from ._model_base import ModelIndicator


logger = logging.getLogger(__name__)

TEXTS = ("example", "instruction", "response")
# The largest k: the paper uses 6, and the search keeps each row's k best candidates (an index and a distance each),
# so 100,000 rows at k = 1,000 already hold about 1.2 GB; `knn_100000000000` in a rule would ask for petabytes.
MAX_K = 1000
# Rows read from a dataset at a time when embedding all of it.
_READ_CHUNK = 4096


class KNNDistance(ModelIndicator):
    """The `knn_{k}` column: L2 distance between normalised sentence embeddings and the k-th nearest neighbour's.

    Args:
        k (`int`, *optional*, defaults to 6): which neighbour.
        model (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`): a sentence encoder
            (any `AutoModel` encoder; mean pooling).
        text (`str`, *optional*, defaults to `"example"`): what to embed: the whole `"example"` (instruction, a
            blank line, response), the `"instruction"` or the `"response"`.
        reference (`datasets.Dataset` or `np.ndarray`, *optional*): a fixed set to search (a dataset in the same
            layout, or its embeddings); needed when scoring batch by batch with `Dataset.map`.
        backend (`str`, *optional*, defaults to `"torch"`): `"torch"` or `"faiss"` for the exact search.
        dtype (`str`, *optional*): the encoder's dtype. `None`/`"auto"` runs float32 on every device
            (`auto_dtype`), unlike the other model indicators: in bf16 the 6 nearest neighbours changed on 3.9% of 1,000 real rows (near-ties
            reordered by rounding; the accuracy contract asks for at most 1%), although the `knn_6` values moved by
            at most 0.25%. `"bfloat16"` embeds about twice as fast on a CPU with native bf16
            (`benchmarks/RESULTS.md`).
        **kwargs: `revision`, `device`, `max_tokens`, `max_length`, `trust_remote_code` (see [`ModelIndicator`])
            and `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import KNNDistance
    >>> knn = KNNDistance(k=6)
    >>> knn.columns, knn.spec()["model"]
    (('knn_6',), 'sentence-transformers/all-MiniLM-L6-v2')
    ```
    """

    name = "knn"
    version = "1"
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    task = "encoder"
    auto_dtype = "float32"  # bf16 changed 3.9% of real rows' neighbour sets (see `dtype` above)
    _transient = (*ModelIndicator._transient, "_reference_embeddings")
    # Not `reference`: the neighbour set is data the caller gives (`InstructScorer(reference=...)`), not the rule.
    rule_options = (*ModelIndicator.rule_options, "k", "text", "backend")

    def __init__(
        self,
        k: int = 6,
        model: str | None = None,
        *,
        text: str = "example",
        reference: Any = None,
        backend: str = "torch",
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive integer, got `{k!r}`.")
        if k > MAX_K:
            raise ValueError(f"`k` must be at most {MAX_K:,} (the neighbour search keeps k per row), got {k:,}.")
        if text not in TEXTS:
            raise ValueError(f"`text` must be one of {list(TEXTS)}, got `{text!r}`.")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got `{backend!r}`.")
        self.k = k
        self.text = text
        self.reference = reference
        self.backend = backend
        self._reference_embeddings = None

    @property
    def columns(self) -> tuple[str, ...]:
        return (f"knn_{self.k}",)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "k": self.k, "text": self.text}

    def context_length(self, model, tokenizer) -> int:
        if self.max_length is None:
            # sentence-transformers' own limit (256 for all-MiniLM-L6-v2), when the folder has its config.
            path = model_file(self.model, "sentence_bert_config.json", self.revision)
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    limit = json.load(f).get("max_seq_length")
                if limit:
                    return int(limit)
        return super().context_length(model, tokenizer)

    def texts(self, pairs: InstructionPairs) -> list[str]:
        if self.text == "instruction":
            return list(pairs.instructions)
        if self.text == "response":
            return list(pairs.responses)
        return [f"{i}\n\n{r}" if i else r for i, r in zip(pairs.instructions, pairs.responses, strict=True)]

    def embed(self, pairs: InstructionPairs, rank: int | None = None) -> np.ndarray:
        """Normalised sentence embeddings `(n, d)` of the valid rows' texts, as sentence-transformers makes them."""
        import torch

        model, tokenizer, device = self.load(rank)
        texts = self.texts(pairs)
        limit = self.context_length(model, tokenizer)
        rows = encode_truncated(tokenizer, texts, limit, "texts")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = np.zeros((len(rows), model.config.hidden_size), dtype=np.float32)

        def encode(batch: list[int]) -> list[float]:
            ids, mask = pad([rows[i] for i in batch], pad_id, device)
            with inference():
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[batch] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
            return [0.0] * len(batch)

        run_in_batches(
            [len(r) for r in rows], self.token_budget(device), encode, desc=f"Embedding for {self.columns[0]}"
        )
        return out

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        if self.reference is None:
            raise ValueError(
                f"`{self.columns[0]}` needs the whole dataset, but `Dataset.map` passes one batch at a time. Use "
                f"`compute_indicators(ds, ['{self.columns[0]}'])` or `KNNDistance.compute_dataset(ds)`, or pass "
                "`reference=` (a dataset or its embeddings) to measure distances to a fixed set."
            )
        if self._reference_embeddings is None:
            self._reference_embeddings = self._embed_reference(self.reference, rank)
        values = self.kth_distances(self.embed(pairs, rank), self._reference_embeddings)
        return {self.columns[0]: values.tolist()}

    def compute_dataset(self, dataset, *, reference: Any = None, rank: int | None = None) -> dict[str, list[float]]:
        """Embed a whole dataset, then measure each row's distance to its k-th nearest neighbour.

        Args:
            dataset (`datasets.Dataset`): the rows to score, in any supported layout.
            reference (`datasets.Dataset` or `np.ndarray`, *optional*): search this set instead of the dataset
                itself (defaults to the indicator's `reference`). Without one, each row's own entry is excluded;
                other rows with the same text still count, at distance 0.
            rank (`int`, *optional*): worker rank, for the device choice.

        Returns:
            `dict[str, list[float]]`: the column, one value per row (NaN for invalid rows with `on_invalid="nan"`).
        """
        reference = self.reference if reference is None else reference
        values = np.full(len(dataset), np.nan)
        embeddings, valid = self._embed_rows(dataset, rank)
        if valid:
            keys = None if reference is None else self._embed_reference(reference, rank)
            values[valid] = self.kth_distances(embeddings, keys)
        return {self.columns[0]: values.tolist()}

    def kth_distances(self, embeddings: np.ndarray, keys: np.ndarray | None = None, device: str | None = None):
        """Each embedding's distance to its k-th nearest neighbour among `keys`, or among the other embeddings.

        Args:
            embeddings (`np.ndarray`): `(n, d)` embeddings of the rows to score (see [`embed`]).
            keys (`np.ndarray`, *optional*): `(m, d)` embeddings of a fixed neighbour set.
            device (`str`, *optional*): where the search runs; defaults to the device the model was loaded on.

        Returns:
            `np.ndarray`: `(n,)` distances.
        """
        return kth_neighbour_distance(embeddings, keys, self.k, backend=self.backend, device=device or self._device)

    def _embed_rows(self, dataset, rank: int | None) -> tuple[np.ndarray, list[int]]:
        """Embeddings of a dataset's valid rows and their positions, read `_READ_CHUNK` rows at a time: memory holds
        the embedding matrix and one chunk of text, never the whole dataset's text or token ids."""
        embeddings: np.ndarray | None = None
        valid: list[int] = []
        for start in range(0, len(dataset), _READ_CHUNK):
            chunk = dataset[start : start + _READ_CHUNK]
            pairs = extract_pairs(
                chunk,
                format=self.format,
                column_mapping=self.column_mapping,
                on_invalid=self.on_invalid,
                indices=range(start, start + len(next(iter(chunk.values())))),
            )
            if pairs.num_invalid == len(pairs):
                continue
            vectors = self.embed(pairs.select_valid() if pairs.num_invalid else pairs, rank)
            if embeddings is None:
                embeddings = np.empty((len(dataset), vectors.shape[1]), dtype=np.float32)
            embeddings[len(valid) : len(valid) + len(vectors)] = vectors
            valid.extend(start + i for i, ok in enumerate(pairs.valid) if ok)
        if embeddings is None:
            return np.zeros((0, 0), dtype=np.float32), []
        return embeddings[: len(valid)], valid

    def _embed_reference(self, reference: Any, rank: int | None) -> np.ndarray:
        if hasattr(reference, "column_names"):
            return self._embed_rows(reference, rank)[0]
        array = np.asarray(reference.cpu() if hasattr(reference, "cpu") else reference, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"`reference` embeddings must be a 2-D array (rows x dims), got shape {array.shape}.")
        return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
