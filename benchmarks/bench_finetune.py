"""Wall time of labelling's unit of work, one LoRA finetuning run of SmolLM2-135M-Instruct: bf16 against float32.

Runs `finetune_and_evaluate` (TRL `SFTTrainer`, LoRA, evaluation after training) on the same real rows with
`LabelingConfig.dtype="float32"` and with the dtype the project picks (`"auto"`: bf16 mixed precision where the CPU
multiplies bf16 natively, float32 elsewhere), or `--dtype bfloat16` to force bf16 on any CPU. Each dtype runs with
several seeds, so the eval-loss difference between dtypes can be read against the seed-to-seed spread. Rows: real
AlpacaEval answers (`../shared/data/alpaca_eval_outputs`), evaluated on other ones.

    python benchmarks/bench_finetune.py --rows 32 --steps 8 --seeds 0 1 2
    python benchmarks/bench_finetune.py --rows 16 --steps 2 --seeds 0 --dtype bfloat16   # bf16 on a CPU without it
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from hf_instructmining import LabelingConfig
from hf_instructmining.labeling.finetune import finetune_and_evaluate
from hf_instructmining.loading import cpu_supports_bf16, default_dtype
from hf_instructmining.offline import smollm2_path


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_eval_outputs"


def load(n_train: int, n_eval: int):
    import datasets

    rows = [r for f in sorted(DATA.glob("*.json")) for r in json.loads(f.read_text()) if r["output"].strip()]
    random.Random(0).shuffle(rows)
    pick = [{"instruction": r["instruction"], "output": r["output"]} for r in rows[: n_train + n_eval]]
    return datasets.Dataset.from_list(pick[:n_train]), datasets.Dataset.from_list(pick[n_train:])


def run(train, eval_set, dtype: str, seed: int, steps: int) -> dict:
    config = LabelingConfig(
        model_name_or_path=smollm2_path(),
        finetuning="lora",
        max_steps=steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_length=256,
        seed=seed,
        device="cpu",
        dtype=dtype,
        sft_overrides={"logging_steps": 1000, "disable_tqdm": True},
    )
    start = time.perf_counter()
    result = finetune_and_evaluate(train, eval_set, config)
    return {
        "wall_s": time.perf_counter() - start,
        "eval_loss": result["eval_loss"],
        "bf16": result["sft_config"]["bf16"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dtype", default="auto", help="the project's side: auto (as users get it) or bfloat16")
    args = parser.parse_args()
    train, eval_set = load(args.rows, args.eval_rows)
    print(
        f"cpu: native bf16 {cpu_supports_bf16()}, dtype auto -> {default_dtype('cpu')}, {torch.get_num_threads()} "
        f"threads | LoRA on SmolLM2-135M-Instruct, {args.rows} rows, {args.steps} steps, eval on {args.eval_rows} rows",
        flush=True,
    )
    results = {"float32": [], args.dtype: []}
    for seed in args.seeds:  # interleaved, so that a change in the machine's load hits both sides
        for dtype in results:
            results[dtype].append(run(train, eval_set, dtype, seed, args.steps))
            r = results[dtype][-1]
            print(
                f"seed {seed} {dtype:<9} (bf16 {r['bf16']!s:<5}) {r['wall_s']:7.1f} s  eval loss {r['eval_loss']:.4f}",
                flush=True,
            )
    base, ours = results["float32"], results[args.dtype]
    wall = statistics.fmean(r["wall_s"] for r in base) / statistics.fmean(r["wall_s"] for r in ours)
    losses = {d: [r["eval_loss"] for r in rs] for d, rs in results.items()}
    spread = max((statistics.stdev(v) for v in losses.values() if len(v) > 1), default=float("nan"))
    diff = statistics.fmean(losses[args.dtype]) - statistics.fmean(losses["float32"])
    print(
        f"ratio       float32 / {args.dtype} wall time {wall:.2f}x (target >= 2x with bf16) | eval loss {args.dtype} - "
        f"float32 {diff:+.4f}, seed-to-seed sd up to {spread:.4f}"
    )


if __name__ == "__main__":
    main()
