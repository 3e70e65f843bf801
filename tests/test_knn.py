"""`KNNDistance`: exact k-th neighbour distances (both backends), embeddings, whole-dataset and reference modes."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, AutoTokenizer

from hf_instructmining.import_utils import is_faiss_available
from hf_instructmining.indicators import KNNDistance, _knn_search, get_indicator
from hf_instructmining.indicators._knn_search import kth_neighbour_distance


ROWS = {
    "instruction": ["Give three tips for staying healthy.", "Translate good morning.", "Count to three.", "Say hi"],
    "output": ["Eat well and sleep well.", "Bonjour.", "1 2 3", "Hello there!"],
}
BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not is_faiss_available(), reason="no faiss"))]


def brute_force(queries, keys, k, exclude_self):
    distances = np.linalg.norm(queries[:, None].astype(np.float64) - keys[None].astype(np.float64), axis=-1)
    if exclude_self:
        np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3])
def test_search_is_exact(backend, k):
    rng = np.random.default_rng(0)
    points, reference = rng.standard_normal((50, 8)), rng.standard_normal((20, 8))
    found = kth_neighbour_distance(points, k=k, backend=backend)
    np.testing.assert_allclose(found, brute_force(points, points, k, True), rtol=1e-6)
    found = kth_neighbour_distance(points, reference, k=k, backend=backend)
    np.testing.assert_allclose(found, brute_force(points, reference, k, False), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 4])
def test_tiles_of_queries_and_references_give_the_same_neighbours(monkeypatch, k):
    """Millions of references do not fit one tile: the search splits them and merges each tile's k best."""
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.standard_normal((37, 6)), rng.standard_normal((3, 6)).repeat(2, axis=0)])
    reference = rng.standard_normal((29, 6))
    monkeypatch.setattr(_knn_search, "_QUERY_BLOCK", 8)
    monkeypatch.setattr(_knn_search, "_BLOCK_BYTES", 4 * 8 * 5)  # 8 queries x 5 references per tile
    np.testing.assert_allclose(kth_neighbour_distance(points, k=k), brute_force(points, points, k, True), rtol=1e-6)
    np.testing.assert_allclose(
        kth_neighbour_distance(points, reference, k=k), brute_force(points, reference, k, False), rtol=1e-6
    )


def test_distance_tile_grows_with_the_dataset_only_up_to_its_cap():
    assert _knn_search.distance_tile_bytes(1_000, 1_000) == 4 * 1_000 * 1_000
    assert _knn_search.distance_tile_bytes(10_000, 10_000) == 4 * 4_096 * 10_000
    assert _knn_search.distance_tile_bytes(100_000, 100_000) == _knn_search._BLOCK_BYTES
    assert _knn_search.distance_tile_bytes(10**7, 10**7) == _knn_search._BLOCK_BYTES


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_duplicates_give_zero(backend):
    points = np.repeat(np.random.default_rng(1).standard_normal((5, 16)), 3, axis=0)
    assert kth_neighbour_distance(points, k=2, backend=backend).tolist() == [0.0] * 15
    assert (kth_neighbour_distance(points, k=3, backend=backend) > 0).all()


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 6 other rows"):
        kth_neighbour_distance(np.zeros((6, 4)), k=6)


def test_embeddings_match_mean_pooling_per_example(tiny_bert_dir):
    model, tokenizer = AutoModel.from_pretrained(tiny_bert_dir).eval(), AutoTokenizer.from_pretrained(tiny_bert_dir)
    indicator = KNNDistance(model=tiny_bert_dir, text="response")
    from hf_instructmining.formats import extract_pairs

    with torch.no_grad():
        expected = [
            torch.nn.functional.normalize(model(**tokenizer(t, return_tensors="pt")).last_hidden_state.mean(1), dim=1)[
                0
            ]
            for t in ROWS["output"]
        ]
    np.testing.assert_allclose(indicator.embed(extract_pairs(ROWS)), torch.stack(expected).numpy(), atol=1e-5)


def test_whole_dataset_excludes_self(tiny_bert_dir):
    indicator = KNNDistance(k=2, model=tiny_bert_dir)
    ds = Dataset.from_dict(ROWS)
    from hf_instructmining.formats import extract_pairs

    embeddings = indicator.embed(extract_pairs(ROWS))
    values = indicator.compute_dataset(ds)["knn_2"]
    np.testing.assert_allclose(values, brute_force(embeddings, embeddings, 2, True), rtol=1e-5)


def test_map_needs_a_reference(tiny_bert_dir):
    ds = Dataset.from_dict(ROWS)
    with pytest.raises(ValueError, match="compute_indicators"):
        ds.map(KNNDistance(k=2, model=tiny_bert_dir), batched=True)


def test_reference_dataset_or_embeddings(tiny_bert_dir):
    reference = Dataset.from_dict(ROWS)
    by_dataset = Dataset.from_dict(ROWS).map(KNNDistance(k=1, model=tiny_bert_dir, reference=reference), batched=True)
    assert by_dataset["knn_1"] == pytest.approx([0.0] * 4, abs=1e-6)  # each row finds itself in the reference
    from hf_instructmining.formats import extract_pairs

    embeddings = KNNDistance(model=tiny_bert_dir).embed(extract_pairs(ROWS))
    by_array = KNNDistance(k=2, model=tiny_bert_dir, reference=embeddings)(ROWS)["knn_2"]
    # A reference set is searched whole: each row meets its own copy there, at distance 0.
    np.testing.assert_allclose(by_array, brute_force(embeddings, embeddings, 2, False), rtol=1e-5)


def test_invalid_rows_are_nan_and_left_out(tiny_bert_dir):
    rows = {k: [*v, v[0]] for k, v in ROWS.items()}
    rows["output"][-1] = ""
    values = KNNDistance(k=1, model=tiny_bert_dir, on_invalid="nan").compute_dataset(Dataset.from_dict(rows))["knn_1"]
    assert np.isnan(values[-1]) and np.isfinite(values[:-1]).all()


def test_a_dataset_is_read_a_chunk_at_a_time_with_the_same_values(tiny_bert_dir, monkeypatch):
    from hf_instructmining.indicators import knn

    rows = {k: [*v, v[0], *v] for k, v in ROWS.items()}
    rows["output"][len(ROWS["output"])] = ""  # an unreadable row between chunks
    ds = Dataset.from_dict(rows)
    whole = KNNDistance(k=2, model=tiny_bert_dir, on_invalid="nan").compute_dataset(ds)["knn_2"]
    monkeypatch.setattr(knn, "_READ_CHUNK", 3)
    chunked = KNNDistance(k=2, model=tiny_bert_dir, on_invalid="nan").compute_dataset(ds)["knn_2"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert np.isnan(chunked[len(ROWS["output"])]) and np.isfinite(np.delete(chunked, len(ROWS["output"]))).all()


def test_registry_and_options():
    indicator = get_indicator("knn_6")
    assert isinstance(indicator, KNNDistance) and indicator.k == 6 and indicator.columns == ("knn_6",)
    assert indicator.model == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="text"):
        KNNDistance(text="everything")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_search_on_gpu_matches_cpu():
    points = np.random.default_rng(2).standard_normal((300, 32))
    np.testing.assert_allclose(
        kth_neighbour_distance(points, k=6, device="cuda"), kth_neighbour_distance(points, k=6), rtol=1e-6
    )
