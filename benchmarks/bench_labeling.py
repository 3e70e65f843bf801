"""The replication's labelling stage end to end: bf16 against float32, on the `cpu` profile's own subsets.

Labels the first `--subsets` subsets of `experiments/replication/replicate.py --profile cpu` (the same pool, eval set,
Dirichlet mixtures and training settings: full finetuning of SmolLM2-135M-Instruct, one eval loss per subset) with
`run_labeling`, three ways, interleaved subset by subset so that a change in the machine's load hits every side:

- `baseline`: the stage as it ran before this project computed the loss itself: float32, with TRL's fused LM head
  (`LabelingConfig(dtype="float32", fused_lm_head=True)`);
- `float32`: float32 with today's defaults (on the CPU, the model's own loss);
- `auto`: today's defaults (bf16 mixed precision where the CPU multiplies bf16 natively, float32 evaluation).

Each side writes its own temporary label store, so nothing is mixed with the committed float32 labels. The wall time
covers everything the stage does per subset: loading the model, tokenising, training, the evaluation and the
store's records.

    python benchmarks/bench_labeling.py --subsets 3

The report gives the wall-time ratios against the baseline and, per subset, the eval-loss difference between the
sides next to how far apart the subsets' labels are: a side's labels are usable if the first is small against the
second.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_instructmining import LabelStore, run_labeling
from hf_instructmining.loading import cpu_supports_bf16, default_dtype


REPLICATION = Path(__file__).resolve().parents[1] / "experiments" / "replication"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=3, help="the first N subsets of the labelling stage")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(REPLICATION))
    from replicate import Data, labeling_config, labelled_subsets, load_settings

    settings = load_settings(REPLICATION / "config.yaml", args.profile)
    data = Data(settings)
    pool, eval_set = data.pool(), data.eval_set()
    subsets = labelled_subsets(pool, settings)["mixtures"][: args.subsets]
    print(
        f"cpu: native bf16 {cpu_supports_bf16()}, dtype auto -> {default_dtype('cpu')}, {torch.get_num_threads()} "
        f"threads | profile {args.profile}: {settings['training']['finetuning']} finetuning, "
        f"{settings['subset_size']} rows per subset, eval on {len(eval_set)} rows",
        flush=True,
    )
    sides = {
        "baseline": {"dtype": "float32", "fused_lm_head": True},
        "float32": {"dtype": "float32"},
        "auto": {"dtype": "auto"},
    }
    runs = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for subset in subsets:
            for side, training in sides.items():
                config = labeling_config({**settings, "training": {**settings["training"], **training}})
                store = LabelStore(Path(tmp) / f"labels-{side}.jsonl")
                start = time.perf_counter()
                (record,) = run_labeling([subset], eval_set, config, store, indicators=[])
                runs[side].append({"wall_s": time.perf_counter() - start, **record})
                print(
                    f"{subset.subset_id} {side:<8} {runs[side][-1]['wall_s']:6.1f} s (train "
                    f"{record['train_runtime_s']:6.1f} s, eval {record['eval_runtime_s']:5.1f} s) eval loss "
                    f"{record['eval_loss']:.5f}",
                    flush=True,
                )
    base = runs["baseline"]
    spread = statistics.stdev(r["eval_loss"] for r in base) if len(base) > 1 else float("nan")
    for side in ("float32", "auto"):
        ours = runs[side]
        ratio = sum(r["wall_s"] for r in base) / sum(r["wall_s"] for r in ours)
        train = sum(r["train_runtime_s"] for r in base) / sum(r["train_runtime_s"] for r in ours)
        differences = [b["eval_loss"] - a["eval_loss"] for a, b in zip(base, ours, strict=True)]
        print(
            f"ratio       baseline / {side:<7} wall time {ratio:.2f}x end to end"
            f"{' (target >= 2x)' if side == 'auto' else ''}, training alone {train:.2f}x | eval loss {side} - "
            f"baseline: largest {max(differences, key=abs):+.5f}, mean {statistics.fmean(differences):+.5f} | sd of "
            f"the baseline labels across subsets {spread:.4f}"
        )


if __name__ == "__main__":
    main()
