"""The replication's labelling stage end to end: bf16 against float32, on the `cpu` profile's own subsets.

Labels the first `--subsets` subsets of `experiments/replication/replicate.py --profile cpu` (the same pool, eval set,
Dirichlet mixtures and training settings: full finetuning of SmolLM2-135M-Instruct, one eval loss per subset) with
`run_labeling`, once with `dtype="float32"` and once with `"auto"` (bf16 mixed precision where the CPU multiplies bf16
natively), interleaved subset by subset so that a change in the machine's load hits both sides. Each side writes its
own temporary label store, so nothing is mixed with the committed float32 labels. The wall time covers everything
the stage does per subset: loading the model, tokenising, training, the evaluation and the store's records.

    python benchmarks/bench_labeling.py --subsets 3

The report gives the wall-time ratio and, per subset, the eval-loss difference between the dtypes next to how far
apart the subsets' labels are: bf16 labels are usable if the first is small against the second.
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
    subsets = labelled_subsets(pool, settings)[: args.subsets]
    print(
        f"cpu: native bf16 {cpu_supports_bf16()}, dtype auto -> {default_dtype('cpu')}, {torch.get_num_threads()} "
        f"threads | profile {args.profile}: {settings['training']['finetuning']} finetuning, "
        f"{settings['subset_size']} rows per subset, eval on {len(eval_set)} rows",
        flush=True,
    )
    sides = {"float32": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for subset in subsets:
            for dtype, runs in sides.items():
                config = labeling_config({**settings, "training": {**settings["training"], "dtype": dtype}})
                store = LabelStore(Path(tmp) / f"labels-{dtype}.jsonl")
                start = time.perf_counter()
                (record,) = run_labeling([subset], eval_set, config, store, indicators=[])
                runs.append({"wall_s": time.perf_counter() - start, **record})
                print(
                    f"{subset.subset_id} {dtype:<8} {runs[-1]['wall_s']:6.1f} s (train {record['train_runtime_s']:6.1f} s, "
                    f"eval {record['eval_runtime_s']:5.1f} s) eval loss {record['eval_loss']:.4f}",
                    flush=True,
                )
    base, ours = sides["float32"], sides["auto"]
    ratio = sum(r["wall_s"] for r in base) / sum(r["wall_s"] for r in ours)
    train = sum(r["train_runtime_s"] for r in base) / sum(r["train_runtime_s"] for r in ours)
    differences = [b["eval_loss"] - a["eval_loss"] for a, b in zip(base, ours, strict=True)]
    spread = statistics.stdev(r["eval_loss"] for r in base) if len(base) > 1 else float("nan")
    print(
        f"ratio       float32 / auto wall time {ratio:.2f}x end to end (target >= 2x), training alone {train:.2f}x | "
        f"eval loss auto - float32: largest {max(differences, key=abs):+.4f}, mean {statistics.fmean(differences):+.4f} "
        f"| sd of the float32 labels across subsets {spread:.4f}"
    )


if __name__ == "__main__":
    main()
