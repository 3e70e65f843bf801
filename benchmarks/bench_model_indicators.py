"""Throughput of the model-based indicators on real rows: this project vs the naive per-example float32 loop.

The naive loop is what research code does: one example at a time, in dataset order, a float32 model,
`model(ids, labels=labels)` (instruction tokens masked) for perplexity and `model(**tokenizer(text))` plus mean
pooling for embeddings, under `torch.no_grad`. The project runs as a user gets it: `dtype="auto"` (bf16 on a CPU
with AMX-BF16 or AVX512-BF16, float32 elsewhere and for KNN embeddings; `--dtype` forces one), token-budget batches,
`torch.inference_mode`. Both sides run in the same process on the same token ids, so the ratio holds even on a busy
machine; the values are compared (largest relative difference, Spearman).

Real rows: AlpacaEval outputs of ten models from `../shared/data/alpaca_eval_outputs` (shuffled, seed 0);
`--mix short|long` takes the shortest or longest responses of a 5x larger draw, to check every length mix.

    python benchmarks/bench_model_indicators.py --rows 1000 --only perplexity embeddings
    python benchmarks/bench_model_indicators.py --rows 200 --dtype bfloat16 --only perplexity   # force bf16
    python benchmarks/bench_model_indicators.py --rows 1000 --device cuda --only perplexity reward

The first lines say what limits the CPU: whether it multiplies bf16 natively, which dtype `auto` picks, and the
measured matmul rate of each dtype at SmolLM2's shapes; each indicator line then says what fraction of its dtype's
rate the project reached. On a GPU the report adds the achieved fraction of the bf16 peak (2 x parameters x tokens /
time); `reward` builds a random-weight checkpoint shaped like Pythia-1.4B in the OpenAssistant layout (GPU only:
it is the 1.4B target).
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
from hf_instructmining.loading import cpu_supports_bf16, default_dtype, load_model
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


def report(name: str, n: int, fast_s: float, naive_s: float | None, diff: str | None, flops: float, device: str):
    line = f"{name:<12} rows={n:<5} project {n / fast_s:8.2f} rows/s"
    if naive_s is not None:
        line += f" | naive float32 {n / naive_s:8.2f} rows/s | ratio {naive_s / fast_s:5.2f}x | {diff}"
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


def bench_perplexity(rows: dict, device: str, dtype: str | None, naive: bool, rates: dict[str, float]):
    indicator = Perplexity(smollm2_path(), device=device, dtype=dtype)
    model, tokenizer, device = indicator.load()
    indicator({k: v[:4] for k, v in rows.items()})  # warm-up
    fast, fast_s = _timed(lambda: indicator(rows)["perplexity"], device)
    prompts, responses = indicator.encode(extract_pairs(rows), tokenizer)
    tokens = sum(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    params = sum(p.numel() for p in model.parameters())
    slow, naive_s, diff = None, None, None
    if naive:
        exact = load_model(smollm2_path(), "causal_lm", None, device, "float32")

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
                    values.append(math.exp(exact(ids, labels=labels).loss.item()))
            return values

        slow, naive_s = _timed(loop, device)
        diff = agreement(fast, slow)
    print(
        f"perplexity: {tokens / len(fast):.0f} tokens per row on average, template {indicator.metadata()['template']}, "
        f"project dtype {model.dtype}"
    )
    report("perplexity", len(fast), fast_s, naive_s, diff, 2 * params * tokens, device)
    print_work_ratio(model, prompts, responses, fast_s, naive_s, device, rates)


def agreement(values, exact) -> str:
    """Largest relative difference and Spearman correlation of `values` against the float32 loop's."""
    from scipy.stats import spearmanr

    relative = max(abs(a - b) / abs(b) for a, b in zip(values, exact, strict=True))
    return f"max rel diff {relative:.1e} | Spearman {spearmanr(values, exact).statistic:.5f}"


def print_work_ratio(model, prompts, responses, fast_s: float, naive_s: float | None, device: str, rates: dict):
    """Matmul work of each side: how much of the speed-up is work not done, and how fast each side computes.

    The naive loop runs the body and the LM head at every position; this project skips the head at instruction
    positions and the body over the prefix every row shares. Each side's FLOP/s is compared with the measured matmul
    rate of the dtype it runs in: the most any forward pass can reach on this machine.
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
    print(
        f"work        naive/project matmul FLOPs {naive_work / work:.2f}x (shared prefix {shared} tokens)",
        flush=True,
    )
    if device == "cpu":
        print_limit(
            work / fast_s, str(model.dtype).removeprefix("torch."), naive_work / naive_s if naive_s else None, rates
        )


def matmul_rates() -> dict[str, float]:
    """FLOP/s of a SmolLM2-shaped matrix multiply (512x576 @ 576x1536, best of 5) in float32 and bfloat16 on the
    CPU: the rate no forward pass in that dtype beats, and the ratio that says whether bf16 pays on this CPU."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        a @ b
        rates[str(dtype).removeprefix("torch.")] = (
            2 * 512 * 576 * 1536 / min(_timed(lambda a=a, b=b: a @ b, "cpu")[1] for _ in range(5))
        )
    return rates


def print_machine(rates: dict[str, float]) -> None:
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    print(
        f"cpu         {capabilities.get('cpu_name', 'unknown')}, {torch.get_num_threads()} threads | native bf16 "
        f"(AMX-BF16 or AVX512-BF16): {cpu_supports_bf16()} | dtype='auto' runs {default_dtype('cpu')} | matmul "
        f"float32 {rates['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s "
        f"(bf16/float32 {rates['bfloat16'] / rates['float32']:.2f}x)",
        flush=True,
    )


def print_limit(project_rate: float, dtype: str, naive_rate: float | None, rates: dict[str, float]):
    """How close each side computes to the matmul rate of its own dtype (the naive loop is float32)."""
    line = f"limit       project at {project_rate / 1e9:.0f} GFLOP/s = {project_rate / rates[dtype]:.0%} of the {dtype} matmul rate"
    if naive_rate is not None:
        line += f" | naive at {naive_rate / 1e9:.0f} GFLOP/s = {naive_rate / rates['float32']:.0%} of the float32 rate"
    print(line, flush=True)


def linear_work(model, tokens: int) -> float:
    """Matmul FLOPs of an encoder over `tokens` tokens: every linear layer once per token (attention scores aside)."""
    return 2 * tokens * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def bench_embeddings(rows: dict, device: str, dtype: str | None, naive: bool, rates: dict[str, float]):
    indicator = KNNDistance(model=minilm_path(), device=device, dtype=dtype)
    model, tokenizer, device = indicator.load()
    pairs = extract_pairs(rows)
    indicator.embed(extract_pairs({k: v[:4] for k, v in rows.items()}))  # warm-up
    fast, fast_s = _timed(lambda: indicator.embed(pairs), device)
    limit = indicator.context_length(model, tokenizer)
    texts = indicator.texts(pairs)
    slow, naive_s, diff = None, None, None
    if naive:
        exact = load_model(minilm_path(), "encoder", None, device, "float32")

        def loop():
            out = []
            with torch.no_grad():
                for text in texts:
                    inputs = tokenizer(text, truncation=True, max_length=limit, return_tensors="pt").to(device)
                    pooled = exact(**inputs).last_hidden_state.mean(1)
                    out.append(torch.nn.functional.normalize(pooled, dim=1)[0].cpu())
            return torch.stack(out).numpy()

        slow, naive_s = _timed(loop, device)
        diff = f"max abs diff {abs(fast - slow).max():.1e} (unit vectors)"
    tokens = sum(min(len(ids), limit) for ids in tokenizer(texts, verbose=False)["input_ids"])
    params = sum(p.numel() for p in model.parameters())
    print(f"embeddings: project dtype {model.dtype}")
    report("embeddings", len(fast), fast_s, naive_s, diff, 2 * params * tokens, device)
    if device == "cpu":
        work = linear_work(model, tokens)
        dtype_name = str(model.dtype).removeprefix("torch.")
        print_limit(work / fast_s, dtype_name, work / naive_s if naive_s else None, rates)


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
    parser.add_argument("--dtype", default=None, help="the project's model dtype (default: auto, as users get it)")
    parser.add_argument(
        "--only", nargs="+", default=["perplexity", "embeddings"], choices=["perplexity", "embeddings", "reward"]
    )
    parser.add_argument("--no-naive", action="store_true", help="time this project only")
    args = parser.parse_args()
    rows = load_rows(args.rows, args.mix)
    print(f"{args.rows} rows ({args.mix}), device {args.device}, torch threads {torch.get_num_threads()}")
    rates = matmul_rates() if args.device == "cpu" else {}
    if rates:
        print_machine(rates)
    if "perplexity" in args.only:
        bench_perplexity(rows, args.device, args.dtype, not args.no_naive, rates)
    if "embeddings" in args.only:
        bench_embeddings(rows, args.device, args.dtype, not args.no_naive, rates)
    if "reward" in args.only:
        bench_reward(rows, args.device, args.dtype)


if __name__ == "__main__":
    main()
