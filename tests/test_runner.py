"""finetune_and_evaluate and run_labeling on a tiny Llama (LoRA and full finetuning, CPU, a few steps)."""

import datasets
import numpy as np
import pytest

from hf_instructmining import LabelingConfig, LabelStore, run_labeling, sample_subsets
from hf_instructmining.labeling.finetune import build_sft_config, finetune_and_evaluate


def _alpaca(n, offset=0):
    return datasets.Dataset.from_dict(
        {
            "instruction": [f"Write {i + offset} words about the sea." for i in range(n)],
            "input": ["" if i % 2 else "calmly" for i in range(n)],
            "output": ["The sea is blue and wide. " * (1 + i % 3) for i in range(n)],
        }
    )


def _config(model_dir, **kwargs):
    settings = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128, "device": "cpu"}
    settings["sft_overrides"] = {"disable_tqdm": True, **kwargs.pop("sft_overrides", {})}
    return LabelingConfig(model_name_or_path=model_dir, **{**settings, **kwargs})


@pytest.mark.slow
def test_finetune_and_evaluate_with_lora_records_through_the_callback(tiny_llama_dir, tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    result = finetune_and_evaluate(
        _alpaca(10), _alpaca(4, 50), _config(tiny_llama_dir), store=store, subset_id="x", metadata={"k": 1}
    )
    assert result["eval_loss"] > 0 and result["num_train_rows"] == 10 and result["global_step"] == 2
    assert result["train_runtime_s"] > 0 and result["peft_config"]["r"] == 8
    assert result["sft_config"]["use_cpu"] is True and result["sft_config"]["bf16"] is False
    [evaluation] = store.records("eval")
    assert evaluation["loss"] == pytest.approx(result["eval_loss"]) and evaluation["run_id"] == result["run_id"]


@pytest.mark.slow
@pytest.mark.parametrize("finetuning", ["lora", "full"])
def test_the_models_own_loss_trains_and_evaluates_like_trls_fused_lm_head(tiny_llama_dir, finetuning):
    """On the CPU the loss is the model's own cross-entropy (TRL's fused LM head costs half a training step there):
    the same training and eval losses as the fused head, for a run that actually moves the weights."""
    results = {
        fused: finetune_and_evaluate(
            _alpaca(8), _alpaca(4, 50), _config(tiny_llama_dir, finetuning=finetuning, fused_lm_head=fused)
        )
        for fused in (None, True)
    }
    assert results[None]["fused_lm_head"] is False and results[True]["fused_lm_head"] is True
    for key in ("train_loss", "eval_loss"):
        assert results[None][key] == pytest.approx(results[True][key], rel=1e-5), key
    untrained = finetune_and_evaluate(_alpaca(8), _alpaca(4, 50), _config(tiny_llama_dir, learning_rate=0.0))
    assert abs(untrained["eval_loss"] - results[None]["eval_loss"]) > 1e-4  # the runs did train


def test_the_lm_head_projects_only_the_scored_positions_and_the_loss_is_the_models(tiny_llama_dir):
    """The loss that labels (`ModelLossSFTTrainer.compute_loss`) is the model's own cross-entropy, with the LM head
    applied to the response tokens alone: prompts (-100) and padding are never projected to the vocabulary."""
    import types

    import torch
    from transformers import AutoModelForCausalLM

    from hf_instructmining.labeling.finetune import _model_loss_trainer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    input_ids = torch.randint(3, model.config.vocab_size, (3, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0  # a padded row
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :4] = -100  # the prompt
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    rows = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(unwrap_model=lambda m: m))
    compute_loss = _model_loss_trainer().compute_loss
    with torch.inference_mode():
        loss, outputs = compute_loss(trainer, model, inputs, return_outputs=True)
        expected = model(**inputs).loss
        summed = compute_loss(trainer, model, inputs, num_items_in_batch=torch.tensor(40))
    scored = int((labels[:, 1:] != -100).sum())  # the first label is nobody's next token
    assert rows[0] == scored == 8 + 5 + 8 and outputs["loss"] is loss  # of 36 positions
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert summed.item() == pytest.approx(expected.item() * scored / 40, rel=1e-6)


@pytest.mark.slow
def test_full_finetuning_chat_format_and_named_eval_sets(tiny_chat_llama_dir):
    config = _config(tiny_chat_llama_dir, finetuning="full", max_steps=1)
    evals = {"a": _alpaca(3, 50), "b": _alpaca(3, 80)}
    result = finetune_and_evaluate(_alpaca(6), evals, config)
    assert set(result["eval_losses"]) == {"eval_a_loss", "eval_b_loss"}
    assert result["eval_loss"] == pytest.approx(np.mean(list(result["eval_losses"].values())))
    assert result["peft_config"] is None


@pytest.mark.slow
def test_run_labeling_resumes_without_duplicates_and_is_reproducible(tiny_llama_dir, tmp_path):
    pool = _alpaca(40).map(
        lambda r, i: {"output_length": float(len(r["output"].split())), "mtld": float(i)}, with_indices=True
    )
    subsets = sample_subsets(pool.remove_columns(["output_length", "mtld"]), n_subsets=3, subset_size=8, seed=1)
    eval_ds = _alpaca(4, 100)
    config = _config(tiny_llama_dir)

    store = LabelStore(tmp_path / "resumed.jsonl")
    run_labeling(subsets[:1], eval_ds, config, store, scored_pool=pool)
    # An attempt at the second subset that was killed after one evaluation.
    store.append({"kind": "train_begin", "subset_id": subsets[1].subset_id, "run_id": "dead"})
    store.append({"kind": "eval", "subset_id": subsets[1].subset_id, "run_id": "dead", "step": 2, "loss": 99.0})
    done = run_labeling(subsets, eval_ds, config, store, scored_pool=pool)

    assert [r["subset_id"] for r in done] == [s.subset_id for s in subsets]
    assert len(store.records("train_begin", include_superseded=True)) == 4  # 1 + the dead one + 2 new
    assert len(store.records("eval")) == 3 and 99.0 not in [r["loss"] for r in store.records("eval")]
    assert all(r["eval_set"]["fingerprint"] == eval_ds._fingerprint for r in store.records("eval"))
    for record, subset in zip(done, subsets, strict=True):
        rows = pool.select(subset.dataset["row_index"])
        assert record["indicator_means"] == pytest.approx(
            {"mtld": np.mean(rows["mtld"]), "output_length": np.mean(rows["output_length"])}
        )
        assert record["indicator_stats"]["mtld"]["n"] == 8 and record["composition"] == {"pool": 8}
        assert record["eval_set"]["fingerprint"] == eval_ds._fingerprint
        assert record["labeling_config"]["max_steps"] == 2 and record["base_model"] == tiny_llama_dir
    labels = store.labels()
    assert [row["subset_id"] for row in labels] == sorted(s.subset_id for s in subsets)

    # A fresh, uninterrupted run gives the same labels.
    fresh = run_labeling(subsets, eval_ds, config, LabelStore(tmp_path / "fresh.jsonl"), scored_pool=pool)
    assert [r["eval_loss"] for r in fresh] == [r["eval_loss"] for r in done]


def test_scratch_folders_of_killed_runs_are_removed(tmp_path, monkeypatch):
    import os
    import re
    import socket
    import subprocess
    import sys
    import tempfile

    from hf_instructmining.labeling.finetune import _scratch_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = {
        f"instructmining-sft-{host}-{gone.stdout.strip()}-a1": False,  # a killed run of this host: removed
        f"instructmining-sft-{host}-{os.getpid()}-b2": True,  # a live run
        f"instructmining-sft-other.host-{gone.stdout.strip()}-c3": True,  # another machine's run
    }
    for name in left:
        (tmp_path / name).mkdir()
    with _scratch_folder() as folder:
        assert os.path.basename(folder).startswith(f"instructmining-sft-{host}-{os.getpid()}-")
    assert sorted(os.listdir(tmp_path)) == sorted(name for name, kept in left.items() if kept)


def test_inputs_are_checked_before_training(tiny_llama_dir, tmp_path):
    subsets = sample_subsets(_alpaca(10), n_subsets=1, subset_size=4)
    with pytest.raises(ValueError, match="mtld"):
        run_labeling(subsets, _alpaca(2), _config(tiny_llama_dir), tmp_path / "l.jsonl", indicators=["mtld"])
    with pytest.raises(ValueError, match="finetuning"):
        LabelingConfig(model_name_or_path=tiny_llama_dir, finetuning="qlora")
    with pytest.raises(ValueError, match="SFTConfig"):
        build_sft_config(
            _config(tiny_llama_dir, sft_overrides={"not_a_field": 1}), output_dir=str(tmp_path), device="cpu"
        )
    with pytest.raises(ValueError, match="subset_id"):
        finetune_and_evaluate(_alpaca(4), _alpaca(2), _config(tiny_llama_dir), store=LabelStore(tmp_path / "s.jsonl"))


@pytest.mark.slow
def test_worker_processes_share_the_subsets_and_take_over_from_a_killed_one(tiny_llama_dir, tmp_path):
    import os
    import signal
    import threading
    import time

    pool = _alpaca(40).map(lambda r, i: {"mtld": float(i)}, with_indices=True)
    subsets = sample_subsets(pool.remove_columns(["mtld"]), n_subsets=3, subset_size=4, seed=2)
    store = LabelStore(tmp_path / "labels.jsonl")
    killed = []

    def kill_the_first_to_train():  # SIGKILL the worker process that starts training first, mid-training
        while time.monotonic() < deadline and not killed:
            started = [r["subset_id"] for r in store.records("train_begin")]  # complete lines only
            if started:
                [take] = [r for r in store.records("claim") if r["subset_id"] == started[0] and r["action"] == "take"]
                os.kill(take["pid"], signal.SIGKILL)
                killed.append(started[0])
            time.sleep(0.05)

    deadline = time.monotonic() + 300
    killer = threading.Thread(target=kill_the_first_to_train, daemon=True)
    killer.start()
    config = _config(tiny_llama_dir, max_steps=15, devices=["cpu", "cpu"])
    done = run_labeling(subsets, _alpaca(4, 100), config, store, scored_pool=pool)
    killer.join()

    assert killed and [r["subset_id"] for r in done] == [s.subset_id for s in subsets]
    attempts = [r["subset_id"] for r in store.records("train_begin", include_superseded=True)]
    assert sorted(attempts) == sorted([*(s.subset_id for s in subsets), killed[0]])  # only the killed one twice
    takes = store.records("claim")
    assert len({r["pid"] for r in takes}) == 2 and not {r["pid"] for r in takes} & {os.getpid()}
