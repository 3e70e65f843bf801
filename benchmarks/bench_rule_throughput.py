"""Throughput of the shipped offline rule's whole scoring, `compute_indicators(ds, rule=...)`, on real rows.

Every configuration scores the same rows through the public path, each in a fresh child process (models loaded once
there, by a warm-up on the first 16 rows, and not timed), with the `datasets` cache in a temporary folder and
caching off, so that nothing is reused between configurations or reruns:

- `v1-bf16`, the baseline: version 1 of `instructmining-smollm2-135m` (read from git history: `output_length`,
  `compression_ratio`, `knn_6` on MiniLM, `unconditional_perplexity`, `ifd`, `end_of_turn_logprob`: SmolLM2 reads
  each response twice, with and without its instruction) at `dtype="auto"`, what main ran: bf16 on a CPU with AMX-BF16
  or AVX512-BF16 (MiniLM stays float32 under `auto`).
- `v2-bf16`: the shipped version 2 (`output_length`, `log(perplexity)`, `end_of_turn_logprob`: one SmolLM2 pass,
  the response with its instruction, and no MiniLM), `dtype="auto"`.
- `v2-float32`: the same with `INSTRUCTMINING_CPU_BF16=0` (`auto` runs float32): the exact values the bf16 scores
  are checked against (Spearman over all rows; the contract asks >= 0.999).
- `--levers` adds configurations that change one setting of `v2-bf16` (see `LEVERS`).

Rows: AlpacaEval answers of the ten models in `../shared/data/alpaca_eval_outputs`, the same number from each model
(a seeded sample of each model's non-empty answers), in a seeded shuffled order.

For each configuration the report gives rows/s, the tokens the model passes processed (counted at each model's
forward: real tokens, and the padding beside them) per second, and the FLOP/s they stand for at 2 x parameters per
token (how the issue counted) as a fraction of the bf16 matmul rate measured here at SmolLM2's shapes
(512x576 @ 576x1536, best of 5, `bench_model_indicators.matmul_rates`).

    python benchmarks/bench_rule_throughput.py --rows 1000
    python benchmarks/bench_rule_throughput.py --rows 100 --configs v2-bf16 --levers   # the levers, quickly
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_model_indicators import DATA, matmul_rates


REPO = Path(__file__).resolve().parents[1]
RULE = "instructmining-smollm2-135m"
# A commit whose built-in rule is still version 1 (version 2 replaced it in d45003e).
V1_COMMIT = "18a4699"
WARMUP_ROWS = 16

# name -> (rule version, environment, compute_indicators options, options set on every model indicator's spec)
CONFIGS = {
    "v1-bf16": (1, {}, {}, {}),
    "v2-bf16": (2, {}, {}, {}),
    "v2-float32": (2, {"INSTRUCTMINING_CPU_BF16": "0"}, {}, {}),
}
# Levers, each one change to `v2-bf16`: the token budget per batch (`max_tokens`, 1,024 on a CPU by default) and
# the rows per `map` batch (`batch_size`, 256 by default: rows are length-sorted within one).
LEVERS = {
    "v2-bf16-budget2048": (2, {}, {}, {"max_tokens": 2048}),
    "v2-bf16-budget4096": (2, {}, {}, {"max_tokens": 4096}),
    "v2-bf16-budget512": (2, {}, {}, {"max_tokens": 512}),
    "v2-bf16-batch1024": (2, {}, {"batch_size": 1024}, {}),
}


def load_rows(n: int) -> dict[str, list[str]]:
    """`n` AlpacaEval answers, the same number from each of the ten models (the first `n % 10` models one more)."""
    files = sorted(DATA.glob("*.json"))
    rng = random.Random(0)
    rows = []
    for i, path in enumerate(files):
        answers = [r for r in json.loads(path.read_text()) if r["output"].strip()]
        rows += rng.sample(answers, n // len(files) + (i < n % len(files)))
    rng.shuffle(rows)
    return {key: [r[key] for r in rows] for key in ("instruction", "output", "generator")}


def rule_dict(version: int, spec_options: dict) -> dict:
    from hf_instructmining.rules import QualityRule

    if version == 1:
        path = "hf_instructmining/builtin_rules/instructmining-smollm2-135m.json"
        text = subprocess.run(
            ["git", "show", f"{V1_COMMIT}:{path}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        rule = json.loads(text)
    else:
        rule = QualityRule.from_builtin(RULE).to_dict()
    for spec in rule["indicators"].values():
        if "model" in spec:
            spec.update(spec_options)
    return rule


class TokenCounter:
    """Counts the tokens each model's body runs over, from a forward pre-hook on every model the indicators load:
    real tokens (the attention mask over the new positions) and padded positions."""

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}
        self.params: dict[str, int] = {}

    def install(self):
        from hf_instructmining.indicators import _model_base

        load = _model_base.load_model

        def counted(name, *args, **kwargs):
            model = load(name, *args, **kwargs)
            body = model.base_model
            if not getattr(body, "_bench_counted", False):
                body._bench_counted = True
                key = next(part for part in reversed(Path(name).parts) if part != "model")
                self.params[key] = sum(p.numel() for p in model.parameters())
                counts = self.counts.setdefault(key, {"tokens": 0, "padded": 0})

                def hook(module, args, kwargs):
                    ids = kwargs.get("input_ids", args[0] if args else None)
                    mask = kwargs.get("attention_mask")
                    counts["padded"] += ids.numel()
                    counts["tokens"] += int(mask[:, -ids.shape[1] :].sum()) if mask is not None else ids.numel()

                body.register_forward_pre_hook(hook, with_kwargs=True)
            return model

        _model_base.load_model = counted

    def reset(self):
        for counts in self.counts.values():
            counts.update(tokens=0, padded=0)


def child(name: str, rows: int, out: str) -> None:
    import datasets
    import torch

    from hf_instructmining import compute_indicators
    from hf_instructmining.scoring import provenance

    datasets.disable_caching()
    datasets.disable_progress_bars()
    version, _, options, spec_options = CONFIGS.get(name) or LEVERS[name]
    rule = rule_dict(version, spec_options)
    ds = datasets.Dataset.from_dict(load_rows(rows))
    counter = TokenCounter()
    counter.install()
    start = time.perf_counter()
    compute_indicators(ds.select(range(WARMUP_ROWS)), rule=rule, **options)
    warmup_s = time.perf_counter() - start
    counter.reset()
    start = time.perf_counter()
    scored = compute_indicators(ds, rule=rule, **options)
    seconds = time.perf_counter() - start
    columns = [c for c in scored.column_names if c not in ds.column_names]
    result = {
        "seconds": seconds,
        "warmup_s": warmup_s,
        "rows": len(ds),
        "counts": counter.counts,
        "params": counter.params,
        "threads": torch.get_num_threads(),
        "dtypes": {c: r["options"].get("dtype") for c, r in provenance.read(scored).indicators.items()},
        "values": {c: list(scored[c]) for c in columns},
    }
    Path(out).write_text(json.dumps(result))


def spearman(a, b) -> tuple[float, int]:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return float(spearmanr(*zip(*pairs, strict=True)).statistic), len(a) - len(pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--levers", nargs="*", default=None, help="the levers to add (all when none is named)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.rows, args.out)
    names = list(args.configs) + (list(args.levers or LEVERS) if args.levers is not None else [])
    rates = matmul_rates()
    print(
        f"{args.rows} rows ({args.rows // 10} or more from each of the ten models) | load average "
        f"{os.getloadavg()[0]:.2f} | matmul at SmolLM2's shapes: float32 {rates['float32'] / 1e9:.0f} GFLOP/s, "
        f"bfloat16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s",
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            env = {
                **os.environ,
                **(CONFIGS.get(name) or LEVERS[name])[1],
                "HF_DATASETS_CACHE": str(Path(tmp) / f"cache-{name}"),
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
            out = Path(tmp) / f"{name}.json"
            load = os.getloadavg()[0]
            done = subprocess.run(
                [sys.executable, __file__, "--child", name, "--rows", str(args.rows), "--out", str(out)],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                print(f"{name}: failed\n{done.stderr[-3000:]}", flush=True)
                continue
            results[name] = result = json.loads(out.read_text())
            report(name, result, rates["bfloat16"], load)
    summarize(results)


def report(name: str, result: dict, bf16_rate: float, load: float) -> None:
    seconds, rows = result["seconds"], result["rows"]
    tokens = {model: c["tokens"] for model, c in result["counts"].items()}
    padded = sum(c["padded"] for c in result["counts"].values())
    flops = sum(2 * result["params"][model] * n for model, n in tokens.items())
    per_model = ", ".join(f"{model} {n / rows:.0f}/row" for model, n in tokens.items())
    print(
        f"{name:<22} {rows / seconds:6.2f} rows/s ({seconds:6.1f} s, warm-up {result['warmup_s']:4.1f} s) | "
        f"{sum(tokens.values()) / seconds:6.0f} model tokens/s ({per_model}; padding "
        f"{padded / max(sum(tokens.values()), 1) - 1:.1%}) | {flops / seconds / 1e9:4.0f} GFLOP/s = "
        f"{flops / seconds / bf16_rate:.1%} of the bf16 matmul rate | load {load:.1f}",
        flush=True,
    )


def summarize(results: dict) -> None:
    base = results.get("v1-bf16")
    for name, result in results.items():
        if base is not None and name != "v1-bf16":
            ratio = (result["rows"] / result["seconds"]) / (base["rows"] / base["seconds"])
            print(f"ratio       {name} / v1-bf16 rows/s: {ratio:.2f}x (target >= 2.5x)")
    exact = results.get("v2-float32")
    if exact is None:
        return
    for name, result in results.items():
        if name.startswith("v2") and name != "v2-float32":
            parts = []
            for column in ("instruct_score", *[c for c in exact["values"] if c != "instruct_score"]):
                rho, dropped = spearman(result["values"][column], exact["values"][column])
                parts.append(f"{column} {rho:.5f}" + (f" ({dropped} NaN rows left out)" if dropped else ""))
            print(f"accuracy    {name} against v2-float32, Spearman over {result['rows']} rows: " + ", ".join(parts))


if __name__ == "__main__":
    main()
