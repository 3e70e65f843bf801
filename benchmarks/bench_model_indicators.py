"""Throughput of the model-based indicators on real rows: this project vs the naive per-example loop.

The naive loop is what research code does: one example at a time, in dataset order, `model(ids, labels=labels)`
(instruction tokens masked) for perplexity and `model(**tokenizer(text))` plus mean pooling for embeddings,
under `torch.no_grad`. Both sides run in the same process on the same loaded model and the same token ids, so
the ratio holds even on a busy machine, and the values are compared (max relative difference).

Real rows: AlpacaEval outputs of ten models from `../shared/data/alpaca_eval_outputs` (shuffled, seed 0);
`--mix short|long` takes the shortest or longest responses of a 5x larger draw, to check every length mix.

    python benchmarks/bench_model_indicators.py --rows 1000 --only perplexity embeddings
    python benchmarks/bench_model_indicators.py --rows 1000 --device cuda --only perplexity reward

On a GPU the report adds the achieved fraction of the bf16 peak (2 x parameters x tokens / time); `reward` builds
a random-weight checkpoint shaped like Pythia-1.4B in the OpenAssistant layout (GPU only: it is the 1.4B target).
"""

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import KNNDistance, Perplexity, RewardScore
from hf_instructmining.indicators._lm_nll import ScoredRow, shared_prefix_length
from hf_instructmining.offline import minilm_path, smollm2_path


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"
# Dense bf16 peak FLOP/s by device name (vendor datasheets, SXM parts).
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def load_rows(n: int, mix: str) -> dict[str, list[str]]:
    rows = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    random.Random(0).shuffle(rows)
    if mix != "all":
        pool = sorted(rows[: 5 * n], key=lambda r: len(r["output"]), reverse=mix == "long")
        rows = random.Random(1).sample(pool[:n], k=min(n, len(pool)))
    rows = rows[:n]
    return {"instruction": [r["instruction"] for r in rows], "output": [r["output"] for r in rows]}


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def report(name: str, n: int, fast_s: float, naive_s: float | None, diff: float | None, flops: float, device: str):
    line = f"{name:<12} rows={n:<5} project {n / fast_s:8.2f} rows/s"
    if naive_s is not None:
        line += f" | naive {n / naive_s:8.2f} rows/s | ratio {naive_s / fast_s:5.2f}x | max rel diff {diff:.1e}"
    peak = peak_flops(device)
    if peak:
        line += f" | {flops / fast_s / 1e12:.1f} TFLOP/s = {flops / fast_s / peak:.0%} of bf16 peak"
    print(line, flush=True)


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def bench_perplexity(rows: dict, device: str, dtype: str | None, naive: bool):
    indicator = Perplexity(smollm2_path(), device=device, dtype=dtype)
    model, tokenizer, device = indicator.load()
    indicator({k: v[:4] for k, v in rows.items()})  # warm-up
    fast, fast_s = _timed(lambda: indicator(rows)["perplexity"], device)
    prompts, responses = indicator.encode(extract_pairs(rows), tokenizer)
    tokens = sum(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    params = sum(p.numel() for p in model.parameters())
    slow, naive_s, diff = None, None, None
    if naive:

        def loop():
            values = []
            with torch.no_grad():
                for i in range(len(rows["output"])):
                    (prompt,), (response,) = indicator.encode(
                        extract_pairs({k: v[i] for k, v in rows.items()}), tokenizer
                    )
                    ids = torch.tensor([prompt + response], device=device)
                    labels = ids.clone()
                    labels[0, : len(prompt)] = -100
                    values.append(math.exp(model(ids, labels=labels).loss.item()))
            return values

        slow, naive_s = _timed(loop, device)
        diff = max(abs(a - b) / abs(b) for a, b in zip(fast, slow, strict=True))
    print(
        f"perplexity: {tokens / len(fast):.0f} tokens per row on average, template {indicator.metadata()['template']}"
    )
    report("perplexity", len(fast), fast_s, naive_s, diff, 2 * params * tokens, device)
    print_work_ratio(model, prompts, responses, fast_s, naive_s, device)


def print_work_ratio(model, prompts, responses, fast_s: float, naive_s: float | None, device: str):
    """Matmul work of each side: how much of the speed-up is work not done, and how fast each side computes.

    The naive loop runs the body and the LM head at every position; this project skips the head at instruction
    positions and the body over the prefix every row shares. The ratio of the two works bounds the speed-up when
    both sides compute at the same FLOP/s; on a CPU, where even one example keeps the matrix multiplies near the
    processor's peak, `print_ceiling` turns it into the most there is to get at float32 with unchanged values.
    """
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in model.base_model.parameters()) - model.get_input_embeddings().weight.numel()
    shared = shared_prefix_length(
        [ScoredRow(p + r, max(len(p), 1), len(p + r)) for p, r in zip(prompts, responses, strict=True)]
    )
    naive_work = sum(2 * (body + head) * (len(p) + len(r)) for p, r in zip(prompts, responses, strict=True))
    work = 2 * body * shared + sum(
        2 * body * (len(p) + len(r) - shared) + 2 * head * len(r) for p, r in zip(prompts, responses, strict=True)
    )
    line = (
        f"work        naive/project matmul FLOPs {naive_work / work:.2f}x (shared prefix {shared} tokens) | "
        f"project {work / fast_s / 1e9:.0f} GFLOP/s"
    )
    if naive_s is not None:
        line += f" | naive {naive_work / naive_s / 1e9:.0f} GFLOP/s"
    print(line, flush=True)
    if naive_s is not None and device == "cpu":
        print_ceiling(work / fast_s, naive_work / naive_s, naive_work / work)


def matmul_peak() -> float:
    """FLOP/s of a large square float32 matrix multiply on the CPU (best of 5): a rate no forward pass beats."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = min(_timed(lambda: a @ b, "cpu")[1] for _ in range(5))
    return 2 * 2048**3 / best


def print_ceiling(project_rate: float, naive_rate: float, work_ratio: float):
    """The largest ratio the project could reach at float32 on this CPU: its work ratio times how far the naive
    loop runs below the matmul peak, and how much of that peak each side reaches."""
    peak = matmul_peak()
    print(
        f"ceiling     float32 matmul peak {peak / 1e9:.0f} GFLOP/s | naive at {naive_rate / peak:.0%}, project at "
        f"{project_rate / peak:.0%} | at most {work_ratio * peak / naive_rate:.2f}x the naive loop even at 100% "
        "of the peak",
        flush=True,
    )


def linear_work(model, tokens: int) -> float:
    """Matmul FLOPs of an encoder over `tokens` tokens: every linear layer once per token (attention scores aside)."""
    return 2 * tokens * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def bench_embeddings(rows: dict, device: str, naive: bool):
    indicator = KNNDistance(model=minilm_path(), device=device, dtype="float32")
    model, tokenizer, device = indicator.load()
    pairs = extract_pairs(rows)
    indicator.embed(extract_pairs({k: v[:4] for k, v in rows.items()}))  # warm-up
    fast, fast_s = _timed(lambda: indicator.embed(pairs), device)
    limit = indicator.context_length(model, tokenizer)
    texts = indicator.texts(pairs)
    slow, naive_s, diff = None, None, None
    if naive:

        def loop():
            out = []
            with torch.no_grad():
                for text in texts:
                    inputs = tokenizer(text, truncation=True, max_length=limit, return_tensors="pt").to(device)
                    pooled = model(**inputs).last_hidden_state.mean(1)
                    out.append(torch.nn.functional.normalize(pooled, dim=1)[0].cpu())
            return torch.stack(out).numpy()

        slow, naive_s = _timed(loop, device)
        diff = float(abs(fast - slow).max())  # unit vectors: absolute difference
    tokens = sum(min(len(ids), limit) for ids in tokenizer(texts, verbose=False)["input_ids"])
    params = sum(p.numel() for p in model.parameters())
    report("embeddings", len(fast), fast_s, naive_s, diff, 2 * params * tokens, device)
    if naive_s is not None and device == "cpu":
        work = linear_work(model, tokens)
        rates = f"project {work / fast_s / 1e9:.0f} GFLOP/s | naive {work / naive_s / 1e9:.0f} GFLOP/s"
        print(f"work        same matmuls on both sides | {rates}", flush=True)
        print_ceiling(work / fast_s, work / naive_s, 1.0)


def bench_reward(rows: dict, device: str, dtype: str | None):
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXModel

    folder = Path(tempfile.mkdtemp()) / "pythia-1.4b-shaped-oa-rm"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
        num_attention_heads=16, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True,
    )  # fmt: skip
    body = GPTNeoXModel(config)
    state = {f"gpt_neox.{k}": v for k, v in body.state_dict().items()}
    state.update({"out_proj.weight": torch.randn(1, 2048) * 0.02, "out_proj.bias": torch.zeros(1)})
    folder.mkdir(parents=True)
    torch.save(state, folder / "pytorch_model.bin")
    raw = {**config.to_dict(), "model_type": "gpt_neox_reward_model", "architectures": ["GPTNeoXRewardModel"]}
    (folder / "config.json").write_text(json.dumps(raw))
    tokenizer.save_pretrained(folder)
    del body, state
    indicator = RewardScore(str(folder), device=device, dtype=dtype, prompt_format="oasst")
    model, tokenizer, device = indicator.load()
    indicator({k: v[:4] for k, v in rows.items()})  # warm-up
    values, fast_s = _timed(lambda: indicator(rows)["reward"], device)
    tokens = sum(len(ids) for ids in indicator.encode(extract_pairs(rows), tokenizer, 2048))
    params = sum(p.numel() for p in model.parameters())
    report("reward-1.4B", len(values), fast_s, None, None, 2 * params * tokens, device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--mix", choices=["all", "short", "long"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="model dtype for perplexity and reward (default per device)")
    parser.add_argument(
        "--only", nargs="+", default=["perplexity", "embeddings"], choices=["perplexity", "embeddings", "reward"]
    )
    parser.add_argument("--no-naive", action="store_true", help="time this project only")
    args = parser.parse_args()
    rows = load_rows(args.rows, args.mix)
    print(f"{args.rows} rows ({args.mix}), device {args.device}, torch threads {torch.get_num_threads()}")
    if "perplexity" in args.only:
        bench_perplexity(rows, args.device, args.dtype, not args.no_naive)
    if "embeddings" in args.only:
        bench_embeddings(rows, args.device, not args.no_naive)
    if "reward" in args.only:
        bench_reward(rows, args.device, args.dtype)


if __name__ == "__main__":
    main()
