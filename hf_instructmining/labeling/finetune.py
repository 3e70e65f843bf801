"""Finetune a base model on one subset with TRL's `SFTTrainer` and evaluate it: one label (Section 3.2).

`finetune_and_evaluate` trains one model (LoRA through PEFT by default, or full finetuning) from a
[`LabelingConfig`], evaluates it on the eval set(s), optionally scores generated answers with `evaluate` metrics,
and returns the eval loss with everything needed to reproduce it. [`~hf_instructmining.run_labeling`] calls it once
per subset; the subset-size search calls it once per trial.
"""

import dataclasses
import gc
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from .._json import to_jsonable
from ..formats import extract_pairs
from ..import_utils import require
from ..loading import resolve_device
from .claims import process_is_gone
from .config import LabelingConfig
from .store import LabelStore, is_eval_loss


logger = logging.getLogger(__name__)

_TEXT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
_SCRATCH_PREFIX = "instructmining-sft-"


def finetune_and_evaluate(
    train_dataset,
    eval_dataset,
    config: LabelingConfig,
    *,
    store: LabelStore | None = None,
    subset_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    metrics: Any = None,
) -> dict[str, Any]:
    """Finetune `config.model_name_or_path` on `train_dataset` with `SFTTrainer` and evaluate it.

    Rows may be in any layout `extract_pairs` reads (Alpaca, prompt/completion, messages); they are turned into
    TRL prompt/completion examples, so the loss covers the responses only.

    Args:
        train_dataset (`datasets.Dataset`): the training rows.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`): the evaluation set, or named sets.
        config ([`LabelingConfig`]): model, finetuning method and training settings.
        store ([`LabelStore`], *optional*): when given, an [`EvalLossCallback`] records every evaluation.
        subset_id (`str`, *optional*): the id recorded with the evaluations; required with `store`.
        metadata (`Mapping[str, Any]`, *optional*): extra fields for the callback's records.
        metrics (`str`, `evaluate.EvaluationModule` or a list of them, *optional*): also score greedy answers to
            `config.generation_num_samples` prompts of each eval set against their responses, e.g. the path of a
            local copy of evaluate's `rouge` module; see [`EvalLossCallback`].

    Returns:
        `dict`: `eval_loss` (with named eval sets, their mean), `eval_losses` (every `eval*_loss`), `train_loss`,
        `train_runtime_s`, `eval_runtime_s`, `num_train_rows`, `global_step`, `run_id`, `base_model`,
        `sft_config` and `peft_config` (plain JSON), `eval_dtype` (`"float32"`: the evaluation after training runs
        without mixed precision, see `LabelingConfig.dtype`; the training dtype if that failed), `fused_lm_head`
        (whether TRL's fused LM head computed the loss, see `LabelingConfig.fused_lm_head`); with `metrics`,
        also `eval_scores` (e.g. `{"eval_rougeL": 0.31}`; `eval_<name>_rougeL` for named eval sets) and their
        `generation` settings.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig
    >>> from hf_instructmining import finetune_and_evaluate
    >>> config = LabelingConfig(model_name_or_path="path/to/model", max_steps=4, device="cpu")
    >>> # finetune_and_evaluate(train_ds, eval_ds, config)["eval_loss"]
    ```
    """
    if config.model_name_or_path is None:
        raise ValueError("`LabelingConfig.model_name_or_path` is not set: name the base model to finetune.")
    if store is not None and not subset_id:
        raise ValueError("Pass `subset_id=` together with `store=` so that the records say which subset they label.")
    if len(train_dataset) == 0:
        raise ValueError("`train_dataset` is empty.")
    evals = dict(eval_dataset) if isinstance(eval_dataset, Mapping) else {"": eval_dataset}
    if not evals or any(len(ds) == 0 for ds in evals.values()):
        raise ValueError("`eval_dataset` is empty.")
    require("trl", "finetune_and_evaluate")
    if config.finetuning == "lora":
        require("peft", "LoRA finetuning (`finetuning='lora'`)")
    from transformers import set_seed

    from .callback import EvalLossCallback
    from .metrics import AnswerScorer, load_metrics

    metrics = (load_metrics(metrics) or None) if metrics is not None else None  # before any model loads

    device = resolve_device(config.device)
    tokenizer = _load_tokenizer(config.model_name_or_path, config.revision, config.gguf_file)
    conversational = config.text_format == "conversational" or (
        config.text_format == "auto" and bool(getattr(tokenizer, "chat_template", None))
    )
    train = _to_prompt_completion(train_dataset, conversational)
    evals = {name: _to_prompt_completion(ds, conversational) for name, ds in evals.items()}
    set_seed(config.seed)  # before the model: LoRA's initial weights come from this seed
    model = _load_model(config, device)
    peft_config = None
    if config.finetuning == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        peft_config = to_jsonable(lora.to_dict())
    samples = {name: _generation_sample(ds, config) for name, ds in evals.items()} if metrics else None
    generation = {"max_new_tokens": config.generation_max_new_tokens, "batch_size": config.generation_batch_size}
    callback = scorer = None
    if store is not None:
        callback = EvalLossCallback(
            store,
            subset_id,
            metadata=metadata,
            metrics=metrics,
            generation_dataset=samples,
            max_new_tokens=generation["max_new_tokens"],
            generation_batch_size=generation["batch_size"],
        )
        scorer = callback.scorer
    elif metrics:
        scorer = AnswerScorer(metrics, samples, **generation)
    with _scratch_folder() as tmp:
        args = build_sft_config(config, output_dir=config.output_dir or tmp, device=device)
        fused_lm_head = config.fused_lm_head if config.fused_lm_head is not None else device != "cpu"
        trainer = _trainer_class(fused_lm_head)(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=evals[""] if "" in evals else evals,
            processing_class=tokenizer,
            callbacks=[callback] if callback else None,
        )
        if len(trainer.train_dataset) == 0:
            raise ValueError(
                f"No training example keeps any response token within `max_length={config.max_length}` (TRL drops "
                "fully masked examples); raise `max_length` or shorten the prompts."
            )
        start = time.perf_counter()
        train_output = trainer.train()
        train_runtime = time.perf_counter() - start
        eval_dtype = "float32"
        if (args.bf16 or args.fp16) and not _remove_autocast(trainer.model):
            eval_dtype = "bfloat16" if args.bf16 else "float16"
        start = time.perf_counter()
        eval_metrics = trainer.evaluate()
        if scorer is not None and callback is None:  # with a store, the callback scored the answers
            for name in evals:
                scorer.score(trainer.model, tokenizer, name or None)
        eval_runtime = time.perf_counter() - start
    losses = {k: float(v) for k, v in eval_metrics.items() if is_eval_loss(k)}
    result = {
        "eval_loss": losses.get("eval_loss", math.fsum(losses.values()) / len(losses)),
        "eval_losses": losses,
        "train_loss": float(train_output.training_loss),
        "train_runtime_s": train_runtime,
        "eval_runtime_s": eval_runtime,
        "num_train_rows": len(train_dataset),
        "global_step": trainer.state.global_step,
        "run_id": callback.run_id if callback else None,
        "base_model": config.model_name_or_path + (f"/{config.gguf_file}" if config.gguf_file else ""),
        "sft_config": to_jsonable(args.to_dict()),
        "eval_dtype": eval_dtype,  # whatever `sft_config.bf16`/`fp16` say about training
        "fused_lm_head": fused_lm_head,
        "peft_config": peft_config,
    }
    if scorer is not None:
        result["eval_scores"] = dict(scorer.latest)
        result["generation"] = scorer.settings()
    del trainer, model
    gc.collect()
    return result


def _trainer_class(fused_lm_head: bool):
    """TRL's `SFTTrainer`, or with `fused_lm_head=False` its subclass whose loss is the model's own (see below)."""
    from trl import SFTTrainer

    return SFTTrainer if fused_lm_head else _model_loss_trainer()


@lru_cache(maxsize=1)
def _model_loss_trainer():
    import torch
    from trl import SFTTrainer

    class ModelLossSFTTrainer(SFTTrainer):
        """`SFTTrainer` whose loss is the model's cross-entropy, its LM head applied at the scored positions only.

        TRL always computes the loss through a fused LM head that projects in chunks and also scores entropy and
        top-1 accuracy; off Triton devices it scores every position, prompts and padding included. On a CPU that
        was half of a bf16 training step of SmolLM2-135M (49,152-token vocabulary). The model's own loss still
        projects every position, while only the response tokens count (TRL's labels): in the replication's batches
        about 45% of the positions. So a pre-hook hands the LM head the hidden states of those positions alone,
        and the loss is the model's (the next token's cross-entropy in float32, summed over the batch's response
        tokens, divided by `num_items_in_batch` or their count): eval losses agree with TRL's to 1e-5. The metrics
        TRL logs from the fused outputs (entropy, token accuracy) are not computed; labels are eval losses.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            # Position t predicts token t + 1, as the model's own loss shifts its labels.
            targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            scored = targets != -100
            head = self.accelerator.unwrap_model(model).get_output_embeddings()

            def scored_positions(module, args):
                hidden = args[0]
                return (hidden[scored],) + args[1:] if hidden.shape[:2] == scored.shape else None

            hook = head.register_forward_pre_hook(scored_positions)
            try:
                outputs = model(**inputs, use_cache=False)
            finally:
                hook.remove()
            # A model that applies its head otherwise (in chunks, to a slice) returns every position's logits.
            logits = outputs.logits if outputs.logits.dim() == 2 else outputs.logits[scored]
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[scored], reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else scored.sum())
            return (loss, {"loss": loss}) if return_outputs else loss

    return ModelLossSFTTrainer


def _remove_autocast(model) -> bool:
    """Take accelerate's mixed-precision wrapper off `model.forward` after training; `False` if none was found.

    The label is the eval loss, so the trained weights are evaluated in float32: under bf16 autocast a LoRA run's
    eval loss moved by 5e-3, ten times its seed-to-seed spread, while training in bf16 moved it by 1e-4
    (`benchmarks/RESULTS.md`). `accelerator.unwrap_model(keep_fp32_wrapper=False)` would also strip TRL's fused
    LM head from a fully finetuned model, so the forward that accelerate saved before wrapping it is put back as is.
    """
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        logger.warning("Found no mixed-precision wrapper to remove: the evaluation runs in the training precision.")
        return False
    model.forward = original
    return True


def build_sft_config(config: LabelingConfig, *, output_dir: str, device: str):
    """The `trl.SFTConfig` for one labelling run: `config`'s settings, CPU-safe defaults, then `sft_overrides`."""
    from trl import SFTConfig

    on_cpu = device == "cpu"
    settings = {
        "output_dir": output_dir,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",  # one evaluation after training, the label
        "prediction_loss_only": True,  # the label is the loss: never gather the eval set's logits
        "logging_steps": 10,
        "use_cpu": on_cpu,
        **_mixed_precision(config.dtype, device),
        "dataloader_pin_memory": not on_cpu,
    }
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    # Activation (gradient) checkpointing, on by default in TRL, only saves memory at ~20% more time per step;
    # transformers 5 renamed the field and warns on the old name.
    settings["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = False
    unknown = sorted(set(config.sft_overrides) - names)
    if unknown:
        raise ValueError(f"`sft_overrides` has fields that `trl.SFTConfig` does not know: {unknown}.")
    return SFTConfig(**{**settings, **config.sft_overrides})


def _mixed_precision(dtype: str, device: str) -> dict[str, bool]:
    """`SFTConfig`'s `bf16`/`fp16` flags for `LabelingConfig.dtype` on `device`: `"auto"` is bf16 where the device
    computes it natively (see `default_dtype`) and float32 elsewhere, never float16 (it needs loss scaling)."""
    from ..loading import default_dtype

    name = dtype
    if dtype == "auto":
        name = "bfloat16" if default_dtype(device) == "bfloat16" else "float32"
    if name == "float16" and not device.startswith("cuda"):
        raise ValueError("`dtype='float16'` trains with CUDA mixed precision only; use `'bfloat16'` or `'float32'`.")
    return {"bf16": name == "bfloat16", "fp16": name == "float16"}


@lru_cache(maxsize=4)
def _load_tokenizer(name_or_path: str, revision: str | None, gguf_file: str | None):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoTokenizer.from_pretrained(name_or_path, revision=revision, **kwargs)


@lru_cache(maxsize=1)
def _gguf_weights(name_or_path: str, revision: str | None, gguf_file: str):
    """Dequantise a GGUF checkpoint once per process (about 30 s for 135M parameters); later runs copy it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    logger.info("Dequantising %s/%s (once per process).", name_or_path, gguf_file)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, gguf_file=gguf_file)
    # The dequantised weights are plain floats: without the GGUF quantization config, Trainer finetunes them.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    return AutoConfig.for_model(**config), {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_model(config: LabelingConfig, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    if config.gguf_file:
        model_config, weights = _gguf_weights(config.model_name_or_path, config.revision, config.gguf_file)
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
        model.load_state_dict(weights, strict=False)  # a tied lm_head may be absent from the GGUF weights
        model.tie_weights()
    else:
        model = AutoModelForCausalLM.from_pretrained(
            config.model_name_or_path, revision=config.revision, dtype=torch.float32
        )
    return model


def _generation_sample(dataset, config: LabelingConfig):
    """The eval rows answered for generated-answer metrics: a seeded sample, identical for every subset."""
    if len(dataset) <= config.generation_num_samples:
        return dataset
    return dataset.shuffle(seed=config.seed).select(range(config.generation_num_samples))


def _to_prompt_completion(dataset, conversational: bool):
    """Rows in any layout -> TRL prompt/completion rows (chat messages, or text in an Alpaca-style template)."""

    def convert(batch):
        pairs = extract_pairs(batch)
        if conversational:
            return {
                "prompt": pairs.prompts,
                "completion": [[{"role": "assistant", "content": r}] for r in pairs.responses],
            }
        return {
            "prompt": [_TEXT_TEMPLATE.format(instruction=i) for i in pairs.instructions],
            "completion": pairs.responses,
        }

    return dataset.map(convert, batched=True, remove_columns=dataset.column_names, desc="Formatting for SFT")


@contextmanager
def _scratch_folder() -> Iterator[str]:
    """A temporary trainer folder, removed afterwards. A killed run cannot remove its own, so the folder's name says
    which host and process made it, and each run first removes the folders of processes of this host that are gone."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())
    _remove_orphaned_folders(host)
    folder = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{host}-{os.getpid()}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_orphaned_folders(host: str) -> None:
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        parts = name[len(_SCRATCH_PREFIX) :].rsplit("-", 2) if name.startswith(_SCRATCH_PREFIX) else []
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and process_is_gone(int(parts[1])):
            logger.info("Removing %s, left behind by a finetuning run that was killed.", name)
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
