"""Throughput of the shipped offline rule's whole scoring, `compute_indicators(ds, rule=...)`, on real rows.

Every configuration scores the same rows through the public path, each in a fresh child process (models loaded once
there, by a warm-up on the first 16 rows, and not timed), with the `datasets` cache in a temporary folder and
caching off, so that nothing is reused between configurations or reruns:

- `baseline`: what issue 29 measured, "today's rows/s": the library as it was when the issue was filed (commit
  `18a4699`, exported from git history into a temporary folder and imported from there) scoring that day's built-in
  rule, version 1 of `instructmining-smollm2-135m` (`output_length`, `compression_ratio`, `knn_6` on MiniLM,
  `unconditional_perplexity`, `ifd`, `end_of_turn_logprob`: SmolLM2 reads each response twice, with and without its
  instruction) at `dtype="auto"`: bf16 on a CPU with AMX-BF16 or AVX512-BF16 (MiniLM stays float32 under `auto`).
- `v1-bf16`: the same rule through this library: what the library's own changes gained on the old rule.
- `shipped-bf16`: the shipped rule (version 3: `output_length`, `log(perplexity)`, `end_of_turn_logprob`: one SmolLM2
  pass, the response with its instruction, and no MiniLM) through this library, `dtype="auto"`.
- `shipped-float32`: the same with `INSTRUCTMINING_CPU_BF16=0` (`auto` runs float32): the exact values the bf16
  scores are checked against (Spearman over all rows; the contract asks >= 0.999).
- `--levers` adds configurations that each undo one of the changes that made `shipped-bf16` fast, or change its
  token budget (see `LEVERS`): what each change is worth, side by side.

`--repeats N` runs the whole list N times, configurations interleaved so that drift in the machine's speed hits each
alike, and reports each configuration's median rows/s.

Rows: AlpacaEval answers of the ten models in `../shared/data/alpaca_eval_outputs`, the same number from each model
(a seeded sample of each model's non-empty answers), in a seeded shuffled order.

For each configuration the report gives rows/s, the tokens the model passes processed (counted at each model's
forward: real tokens, and the padding beside them) per second, and the FLOP/s they stand for at 2 x parameters per
token (how the issue counted) as a fraction of the bf16 matmul rate measured here at SmolLM2's shapes
(512x576 @ 576x1536, best of 5, `bench_model_indicators.matmul_rates`).

    python benchmarks/bench_rule_throughput.py --rows 210 --configs baseline shipped-bf16 --repeats 3
    python benchmarks/bench_rule_throughput.py --rows 1000 --configs shipped-bf16 shipped-float32   # accuracy
    python benchmarks/bench_rule_throughput.py --rows 100 --configs shipped-bf16 --levers   # the levers, quickly
"""

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_model_indicators import DATA, matmul_rates


REPO = Path(__file__).resolve().parents[1]
RULE = "instructmining-smollm2-135m"
# Main when issue 29 was filed; its built-in rule is version 1 (version 2 replaced it in d45003e).
BASELINE_COMMIT = "18a4699"
WARMUP_ROWS = 16

# name -> (rule: 1 for version 1, else the shipped one; environment; compute_indicators options; options set on
# every model indicator's spec). `baseline` also runs the library of BASELINE_COMMIT.
CONFIGS = {
    "baseline": (1, {}, {}, {}),
    "v1-bf16": (1, {}, {}, {}),
    "shipped-bf16": (3, {}, {}, {}),
    "shipped-float32": (3, {"INSTRUCTMINING_CPU_BF16": "0"}, {}, {}),
}
# Levers, each one change to `shipped-bf16`: glibc's defaults for freed memory (`INSTRUCTMINING_CPU_MALLOC=0`: large
# blocks go back to the kernel on every free), the token budget per batch (`max_tokens`; 4,096 on a bf16 CPU by
# default, 1,024 before), and the loss computed as before, from logits upcast to float32 in 2,048-position chunks
# (undone in the child, `PATCHES`).
LEVERS = {
    "shipped-bf16-glibc-defaults": (3, {"INSTRUCTMINING_CPU_MALLOC": "0"}, {}, {}),
    "shipped-bf16-float32-loss": (3, {}, {}, {}),
    "shipped-bf16-budget1024": (3, {}, {}, {"max_tokens": 1024}),
    "shipped-bf16-budget2048": (3, {}, {}, {"max_tokens": 2048}),
    "shipped-bf16-budget8192": (3, {}, {}, {"max_tokens": 8192}),
}


def float32_loss() -> None:
    """The loss as before: logits upcast to float32, 2,048 positions at a time."""
    import torch

    from hf_instructmining.indicators import _lm_nll

    def token_nll(states, targets, head):
        losses = []
        for start in range(0, len(states), 2048):
            chunk = states[start : start + 2048]
            logits = (head(chunk) if head is not None else chunk).float()
            losses.append(torch.nn.functional.cross_entropy(logits, targets[start : start + 2048], reduction="none"))
        return torch.cat(losses) if losses else states.new_zeros(0, dtype=torch.float32)

    _lm_nll._token_nll = token_nll


PATCHES = {"shipped-bf16-float32-loss": float32_loss}


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
            ["git", "show", f"{BASELINE_COMMIT}:{path}"], cwd=REPO, check=True, capture_output=True, text=True
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
    if name in PATCHES:
        PATCHES[name]()
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
    parser.add_argument("--repeats", type=int, default=1, help="runs of every configuration, interleaved")
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
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline_tree = Path(tmp) / "baseline"
        if "baseline" in names:
            baseline_tree.mkdir()
            archive = subprocess.run(
                ["git", "archive", BASELINE_COMMIT, "hf_instructmining"], cwd=REPO, check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline_tree)], input=archive, check=True)
        for repeat in range(args.repeats):
            for name in names:
                env = {
                    **os.environ,
                    **(CONFIGS.get(name) or LEVERS[name])[1],
                    "HF_DATASETS_CACHE": str(Path(tmp) / f"cache-{name}-{repeat}"),
                    "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false",
                }
                if name == "baseline":  # the library of BASELINE_COMMIT comes first on the path
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(baseline_tree), env.get("PYTHONPATH")]))
                out = Path(tmp) / f"{name}-{repeat}.json"
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
                result = json.loads(out.read_text())
                runs.setdefault(name, []).append(result)
                report(name, result, rates["bfloat16"], load)
    summarize(runs)


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


def summarize(runs: dict[str, list[dict]]) -> None:
    """Each configuration's median rows/s over its runs, the ratios to `baseline` (the issue's target) and to
    `v1-bf16`, and the accuracy of the bf16 scores against `shipped-float32` (from each configuration's first run)."""
    rates = {name: statistics.median(r["rows"] / r["seconds"] for r in results) for name, results in runs.items()}
    for name, rate in rates.items():
        spread = ", ".join(f"{r['rows'] / r['seconds']:.2f}" for r in runs[name])
        print(f"median      {name:<22} {rate:6.2f} rows/s (runs: {spread})")
    for base, target in (("baseline", " (target >= 2.5x)"), ("v1-bf16", "")):
        for name in rates:
            if base in rates and name not in (base, "baseline"):
                print(f"ratio       {name} / {base} rows/s: {rates[name] / rates[base]:.2f}x{target}")
    exact = runs.get("shipped-float32")
    if exact is None:
        return
    exact = exact[0]
    for name, results in runs.items():
        if name.startswith("shipped") and name != "shipped-float32":
            parts = []
            for column in ("instruct_score", *[c for c in exact["values"] if c != "instruct_score"]):
                rho, dropped = spearman(results[0]["values"][column], exact["values"][column])
                parts.append(f"{column} {rho:.5f}" + (f" ({dropped} NaN rows left out)" if dropped else ""))
            print(
                f"accuracy    {name} against shipped-float32, Spearman over {exact['rows']} rows: " + ", ".join(parts)
            )


if __name__ == "__main__":
    main()
