"""The bf16 accuracy contract: bf16 against float32 values of the model indicators on 1,000+ real rows.

For perplexity (SmolLM2-135M-Instruct), a reward model (SmolLM2-135M's body with a seeded random one-score head, as a
sequence classifier: no reward model installs offline) and KNN-6 on MiniLM embeddings, the project's bf16 path
against float32: Spearman correlation, the largest relative difference, and for KNN the share of rows whose 6
nearest neighbours are the same set. The project keeps in float32 what must stay exact: log-softmax and losses from
upcast logits, the reward head, the pooling and normalisation of embeddings.

On a CPU that multiplies bf16 natively (AMX-BF16, AVX512-BF16) the bf16 side is the real one. Elsewhere torch
emulates bf16 at a fraction of float32's speed (about 12x slower on this project's AMD EPYC), too slow for 1,000
rows, so the bf16 side is *simulated*: float32 compute on bf16 weights, with every result inside the model rounded to
the nearest bf16 value, which is what bf16 kernels store (they multiply bf16 inputs exactly and accumulate in
float32). The simulation is first checked against the real emulated bf16 path on `--validate` rows, and the report
prints how far apart the two are next to how far bf16 is from float32.

    python benchmarks/bench_precision.py --rows 1000
"""

import argparse
import functools
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_map_only

from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import KNNDistance, Perplexity, RewardScore
from hf_instructmining.loading import cpu_supports_bf16
from hf_instructmining.offline import minilm_path, smollm2_path


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"


def load_rows(n: int) -> dict[str, list[str]]:
    rows = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    random.Random(0).shuffle(rows)
    return {"instruction": [r["instruction"] for r in rows[:n]], "output": [r["output"] for r in rows[:n]]}


class RoundToBf16(TorchDispatchMode):
    """Round every float32 result (in-place ones too) to the nearest bfloat16 value, as bf16 kernels store them."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.is_mutable and isinstance(out, torch.Tensor) and out.dtype == torch.float32:
            return out.copy_(out.to(torch.bfloat16))
        return tree_map_only(torch.Tensor, _round, out)


def _round(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.bfloat16).to(torch.float32) if tensor.dtype == torch.float32 else tensor


# Modules that transformers computes in float32 inside a bf16 model (it upcasts, then casts the result back): run
# them exactly and round only what they return.
_UPCASTING = ("RMSNorm", "LayerNorm", "RotaryEmbedding")


def simulate_bf16(*modules: torch.nn.Module, keep: torch.nn.Module | None = None) -> None:
    """Make float32 `modules` compute as bf16 ones would: bf16 weights, bf16 results (except `keep`, left float32)."""
    kept = set(keep.parameters()) if keep is not None else set()
    for module in modules:
        for parameter in module.parameters():
            if parameter not in kept:
                parameter.data = _round(parameter.data)
        for sub in module.modules():
            if type(sub).__name__.endswith(_UPCASTING):
                sub.forward = _outside(sub.forward, round_result=True)
        module.forward = _rounded(module.forward)
    if keep is not None:  # runs outside the simulation, on upcast inputs, as the project's float32 head does
        keep.forward = _outside(keep.forward)


def _rounded(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with RoundToBf16():
            return forward(*args, **kwargs)

    return run


def _outside(forward, round_result: bool = False):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with _disable_current_modes():
            out = forward(*args, **kwargs)
            return tree_map_only(torch.Tensor, _round, out) if round_result else out

    return run


def compare(name: str, exact, values, extra: str = "") -> dict:
    from scipy.stats import spearmanr

    exact, values = np.asarray(exact, dtype=float), np.asarray(values, dtype=float)
    relative = np.abs(values - exact) / np.maximum(np.abs(exact), 1e-12)
    result = {"spearman": float(spearmanr(values, exact).statistic), "max_rel": float(relative.max())}
    print(
        f"{name:<22} rows={len(exact):<5} Spearman {result['spearman']:.5f} | max rel diff {result['max_rel']:.2e} | "
        f"median rel diff {np.median(relative):.1e}{extra}",
        flush=True,
    )
    return result


def build_reward_model(folder: Path) -> str:
    """SmolLM2-135M-Instruct as a sequence classifier with a seeded random one-score head (a stand-in reward model)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(smollm2_path(), num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model.config.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--validate", type=int, default=16, help="rows on which the simulation meets real bf16")
    parser.add_argument("--only", nargs="+", choices=["perplexity", "reward", "knn_6"], default=None)
    args = parser.parse_args()
    rows = load_rows(args.rows)
    real = cpu_supports_bf16()
    print(f"{args.rows} real rows; bf16 side: {'real (native bf16 CPU)' if real else 'simulated (no native bf16)'}")
    from hf_instructmining import loading

    def fresh(cls, path, dtype, **options):
        loading.load_model.cache_clear()  # each side gets its own copy of the weights (the simulation edits them)
        return cls(path, dtype=dtype or "float32", **options) if path else cls(dtype=dtype or "float32", **options)

    def ppl(dtype):
        return fresh(Perplexity, smollm2_path(), dtype)

    def simulate_ppl(indicator):
        model, _, _ = indicator.load()
        simulate_bf16(model.base_model, model.get_output_embeddings())

    with tempfile.TemporaryDirectory() as tmp:
        reward_path = build_reward_model(Path(tmp) / "smollm2-reward")

        def reward(dtype):
            return fresh(RewardScore, reward_path, dtype, prompt_format="chat")

        def simulate_reward(indicator):
            model, _, _ = indicator.load()
            simulate_bf16(model, keep=model.score)

        def knn(dtype):
            return fresh(KNNDistance, None, dtype, k=6, model=minilm_path())

        def simulate_knn(indicator):
            model, _, _ = indicator.load()
            simulate_bf16(model)

        families = [
            ("perplexity", ppl, simulate_ppl, lambda ind, r: ind(r)["perplexity"]),
            ("reward", reward, simulate_reward, lambda ind, r: ind(r)["reward"]),
        ]
        only = set(args.only or ["perplexity", "reward", "knn_6"])
        families = [family for family in families if family[0] in only]
        if not real and args.validate:
            print(f"-- the simulation against real (emulated) bf16 on {args.validate} rows")
            small = {k: v[: args.validate] for k, v in rows.items()}
            for name, make, simulate, run in families:
                loading.load_model.cache_clear()
                start = time.perf_counter()
                truth = run(make("bfloat16"), small)
                real_s = time.perf_counter() - start
                exact = run(make(None), small)
                sim = make(None)
                simulate(sim)
                start = time.perf_counter()
                simulated = run(sim, small)
                sim_s = time.perf_counter() - start
                compare(
                    f"{name}: sim vs bf16", truth, simulated, f" | real bf16 {real_s:.0f} s, simulated {sim_s:.0f} s"
                )
                compare(f"{name}: bf16 vs fp32", exact, truth)
                compare(f"{name}: sim vs fp32", exact, simulated)
        print(f"-- bf16 against float32 on {args.rows} rows")
        for name, make, simulate, run in families:
            exact = run(make(None), rows)
            if real:
                values = run(make("bfloat16"), rows)
            else:
                indicator = make(None)
                simulate(indicator)
                values = run(indicator, rows)
            compare(name, exact, values)
        if "knn_6" not in only:
            return
        pairs = extract_pairs(rows)
        exact = knn(None).embed(pairs)
        if real:
            approx = knn("bfloat16").embed(pairs)
        else:
            indicator = knn(None)
            simulate_knn(indicator)
            approx = indicator.embed(pairs)
        same = np.mean([set(a) == set(b) for a, b in zip(_neighbours(exact, 6), _neighbours(approx, 6), strict=True)])
        distances = [np.sort(_distances(e), axis=1)[:, 6] for e in (exact, approx)]  # column 0: the row itself
        compare("knn_6", distances[0], distances[1], f" | same 6 neighbours on {same:.1%} of rows (target >= 99%)")


def _distances(embeddings: np.ndarray) -> np.ndarray:
    """L2 distances between unit vectors: sqrt(2 - 2 cos)."""
    return np.sqrt(np.maximum(2 - 2 * embeddings.astype(np.float64) @ embeddings.T.astype(np.float64), 0))


def _neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    distances = _distances(embeddings)
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


if __name__ == "__main__":
    main()
