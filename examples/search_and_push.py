"""How many of the best rows to keep, then publish: score, search over k, push the dataset with its card.

1. Score the data with the project's offline rule, `instructmining-smollm2-135m` (fitted for SmolLM2-135M-Instruct
   on AlpacaEval answers; fit your own for your model and data).
2. `search_subset_size`: a bracketing search over k; each trial finetunes the base model (LoRA, TRL `SFTTrainer`)
   on the top k rows and measures eval loss on held-out rows. Trials persist in `<workdir>/trials.jsonl`: run the
   command again to resume or extend the search.
3. Keep the best k and publish: `push_to_hub` uploads the scored and selected parquet, the rule, the search curve
   and a dataset card (token from `HF_TOKEN` or `hf auth login`); `--folder` writes the same layout locally.

    python examples/search_and_push.py --folder ./selected-demo
    python examples/search_and_push.py --repo-id me/instructmining-demo --num-samples 8 --max-steps 8
"""

import argparse
import os

from hf_instructmining.offline import example_data_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=example_data_path(), help="the project's example data by default")
    parser.add_argument("--model", default=None, help="base model to finetune; the packaged SmolLM2-135M by default")
    parser.add_argument("--eval-size", type=int, default=24)
    parser.add_argument("--low", type=int, default=8)
    parser.add_argument("--high", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--workdir", default="instructmining-search-example")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="Hub dataset repo to push to")
    target.add_argument("--folder", help="write the Hub layout locally instead")
    args = parser.parse_args()

    import datasets

    from hf_instructmining import (
        LabelingConfig,
        QualityRule,
        compute_indicators,
        push_to_hub,
        save_scored,
        search_subset_size,
        select_top_k,
    )
    from hf_instructmining.offline import localize_rule, smollm2_path

    data = datasets.load_dataset("json", data_files=args.data, split="train")
    # Hold out evaluation rows first: the search must never train on what it evaluates.
    split = data.train_test_split(test_size=args.eval_size, seed=0)
    pool, eval_set = split["train"], split["test"]

    rule = QualityRule.from_builtin("instructmining-smollm2-135m")
    scored = compute_indicators(pool, rule=localize_rule(rule))

    config = LabelingConfig(
        model_name_or_path=args.model or smollm2_path(),
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        max_length=args.max_length,
        learning_rate=1e-3,
        device="cpu",
        sft_overrides={"disable_tqdm": True},
    )
    result = search_subset_size(
        scored,
        low=args.low,
        high=min(args.high, len(scored)),
        num_samples=args.num_samples,
        store=os.path.join(args.workdir, "trials.jsonl"),
        eval_dataset=eval_set,
        labeling_config=config,
    )
    for trial in result.trace:
        print(f"  trial {trial['trial']}: k={trial['k']:<5} eval loss {trial['loss']:.4f}  ({trial['time_s']:.0f} s)")
    print(f"best k = {result.best_k} (eval loss {result.best_loss:.4f})")

    selected = select_top_k(scored, result.best_k)
    if args.folder:
        print("wrote", save_scored(scored, args.folder, rule=rule, selection=selected, search=result))
    else:
        commit = push_to_hub(scored, args.repo_id, rule=rule, selection=selected, search=result)
        print("pushed", commit.commit_url)


if __name__ == "__main__":
    main()
