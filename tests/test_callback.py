"""EvalLossCallback inside a real TRL SFTTrainer run (tiny Llama, LoRA, CPU, a few steps)."""

import datasets
import pytest

from hf_instructmining import EvalLossCallback, LabelStore


def _pairs(n, offset=0):
    return datasets.Dataset.from_dict(
        {
            "prompt": [f"Write {i + offset} words about the sea." for i in range(n)],
            "completion": ["The sea is blue and wide. " * (1 + i % 3) for i in range(n)],
        }
    )


@pytest.mark.slow
def test_records_every_eval_loss_inside_sft_trainer(tiny_llama_dir, tmp_path):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    store = LabelStore(tmp_path / "labels.jsonl")
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        max_length=64,
        eval_strategy="steps",
        eval_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=tiny_llama_dir,
        args=args,
        train_dataset=_pairs(12),
        eval_dataset={"sea": _pairs(4, 100), "more": _pairs(4, 200)},
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[EvalLossCallback(store, "subset-7", metadata={"note": "tiny"})],
    )
    trainer.train()
    trainer.evaluate()  # the last step again: not recorded twice

    begin = store.records("train_begin")
    assert len(begin) == 1 and begin[0]["base_model"] == tiny_llama_dir
    assert begin[0]["peft_config"]["default"]["r"] == 4
    assert begin[0]["training_args"]["max_steps"] == 3 and begin[0]["library_versions"]["trl"]
    evals = store.records("eval")
    assert sorted((r["step"], r["metric"]) for r in evals) == [
        (step, f"eval_{name}_loss") for step in (1, 2, 3) for name in ("more", "sea")
    ]
    assert all(r["subset_id"] == "subset-7" and r["note"] == "tiny" and r["loss"] > 0 for r in evals)
    assert {r["eval_name"] for r in evals} == {"sea", "more"}
    assert all(r["epoch"] is not None for r in evals)
    assert len({r["run_id"] for r in store.records()}) == 1


def test_only_the_main_process_writes_and_steps_are_not_repeated(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    store = LabelStore(tmp_path / "labels.jsonl")
    callback = EvalLossCallback(str(store.path), "s")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    worker = TrainerState(global_step=2, epoch=0.5, is_world_process_zero=False)
    callback.on_evaluate(args, worker, TrainerControl(), metrics={"eval_loss": 1.0})
    assert store.records() == []
    main = TrainerState(global_step=2, epoch=0.5)
    for _ in range(2):
        callback.on_evaluate(args, main, TrainerControl(), metrics={"eval_loss": 1.0, "eval_accuracy": 0.3})
    assert [(r["metric"], r["step"], r["eval_name"]) for r in store.records()] == [("eval_loss", 2, None)]


def test_constructor_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="LabelStore"):
        EvalLossCallback(object(), "s")
    with pytest.raises(ValueError, match="subset_id"):
        EvalLossCallback(LabelStore(tmp_path / "l.jsonl"), "")
