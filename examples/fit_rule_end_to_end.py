"""Fit your own InstructMining rule end to end: sample subsets, label them by finetuning, regress (Section 3.2).

1. Score the example data with the indicators that run offline (input/output length, MTLD).
2. Split it into named sources (here: by the hand-labelled `style` column, standing in for the separate datasets
   the paper mixes) and sample random mixtures of them with `sample_subsets`.
3. Finetune SmolLM2-135M-Instruct with LoRA on each subset (`run_labeling`, TRL `SFTTrainer` on CPU) and record
   the eval loss on held-out careful answers in a crash-safe `LabelStore`.
4. Regress log eval loss on the subsets' mean indicators (`fit_rule`) and print the report.

The settings are tiny so that it finishes on a laptop CPU; the paper used 129 subsets of 1,000 rows and
LLaMA-2-7B. Interrupt it at any time and run the same command again: finished subsets are skipped, the rest are
redone, and the rule is the same as from an uninterrupted run with the same seed.

    python examples/fit_rule_end_to_end.py
    python examples/fit_rule_end_to_end.py --n-subsets 20 --subset-size 32 --max-steps 8 --selection bic
"""

import argparse
import json
import os
import time

from hf_instructmining.offline import example_data_path


INDICATORS = ["input_length", "output_length", "mtld"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=example_data_path(), help="the project's example data by default")
    parser.add_argument("--workdir", default="instructmining-fit-example")
    parser.add_argument("--model", default=None, help="Hub id or folder; defaults to the packaged SmolLM2-135M.")
    parser.add_argument("--n-subsets", type=int, default=8)
    parser.add_argument("--subset-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--selection", default="all", choices=["all", "backward", "bic"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import datasets

    from hf_instructmining import (
        MTLD,
        InputLength,
        LabelingConfig,
        LabelStore,
        OutputLength,
        fit_rule,
        run_labeling,
        sample_subsets,
    )
    from hf_instructmining.labeling import split_by_column
    from hf_instructmining.offline import smollm2_path

    start = time.perf_counter()
    data = datasets.load_dataset("json", data_files=args.data, split="train")
    for indicator in (InputLength(), OutputLength(), MTLD()):
        data = data.map(indicator, batched=True, desc=f"Scoring {indicator.name}")

    # Evaluate on held-out careful answers, as the paper evaluates on a separate high-quality set.
    careful = [i for i, style in enumerate(data["style"]) if style == "careful"]
    held_out = set(careful[:: max(1, len(careful) // args.eval_size)][: args.eval_size])
    eval_set = data.select(sorted(held_out)).select_columns(["instruction", "input", "output"])
    pool = data.select([i for i in range(len(data)) if i not in held_out])
    sources = split_by_column(pool, "style")

    subsets = sample_subsets(sources, n_subsets=args.n_subsets, subset_size=args.subset_size, seed=args.seed)
    config = LabelingConfig(
        model_name_or_path=args.model or smollm2_path(),
        max_steps=args.max_steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_length=args.max_length,
        learning_rate=1e-3,
        seed=args.seed,
        device="cpu",
        sft_overrides={"logging_steps": 100, "disable_tqdm": True},
    )
    store = LabelStore(os.path.join(args.workdir, "labels.jsonl"))
    labels = run_labeling(subsets, eval_set, config, store, scored_pool=sources, indicators=INDICATORS)

    result = fit_rule(labels, indicators=INDICATORS, selection=args.selection, name="smollm2-135m-example")
    print(result.report())
    path = result.rule.save(os.path.join(args.workdir, "rule.json"))
    summary = {"intercept": result.rule.intercept, "coefficients": result.rule.coefficients}
    print(f"\nrule: {json.dumps(summary)}\nsaved to {path}; {time.perf_counter() - start:.0f} s in this run")


if __name__ == "__main__":
    main()
