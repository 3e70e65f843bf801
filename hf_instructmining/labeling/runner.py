"""Finetune a base model on each training subset with TRL's `SFTTrainer` and record its eval loss (Section 3.2).

`finetune_and_evaluate` trains one model (LoRA through PEFT by default, or full finetuning) and evaluates it;
`run_labeling` loops it over subsets, skipping those a `LabelStore` already has, and records each subset's
eval loss with its mean indicator values: the rows that [`~hf_instructmining.fit_rule`] regresses.

Subsets run one after another on one device. When `LabelingConfig.devices` names several devices (e.g.
`["cuda:0", "cuda:1"]`, or `"auto"` with several GPUs visible), one worker process per device labels one subset
at a time; every worker appends to the same store, which is safe across processes.
"""

import dataclasses
import gc
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..formats import extract_pairs
from ..import_utils import require
from .store import LabelStore, library_versions, to_jsonable
from .subsets import Subset


logger = logging.getLogger(__name__)

_TEXT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass
class LabelingConfig:
    """How each subset is finetuned and evaluated.

    Args:
        model_name_or_path (`str`): the base model, a Hub id or a local folder.
        gguf_file (`str`, *optional*): a GGUF file inside `model_name_or_path` to dequantise and train.
        revision (`str`, *optional*): the base model's revision on the Hub.
        finetuning (`str`, *optional*, defaults to `"lora"`): `"lora"` (PEFT) or `"full"`.
        lora_r (`int`, *optional*, defaults to `8`): LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `16`): LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to `0.0`): LoRA dropout.
        lora_target_modules (`str` or `list[str]`, *optional*, defaults to `"all-linear"`): modules LoRA adapts.
        learning_rate (`float`, *optional*): defaults to `2e-4` with LoRA and `2e-5` for full finetuning.
        num_train_epochs (`float`, *optional*, defaults to `1.0`): epochs over each subset.
        max_steps (`int`, *optional*, defaults to `-1`): when positive, train this many steps instead.
        per_device_train_batch_size (`int`, *optional*, defaults to `4`): training batch size.
        per_device_eval_batch_size (`int`, *optional*, defaults to `8`): evaluation batch size.
        max_length (`int`, *optional*, defaults to `512`): tokens per example (longer ones are truncated).
        seed (`int`, *optional*, defaults to `42`): the same seed for every subset, so that subsets differ only by
            their data.
        text_format (`str`, *optional*, defaults to `"auto"`): `"conversational"` (chat template),
            `"text"` (an Alpaca-style prompt) or `"auto"` (conversational when the tokenizer has a chat template).
        device (`str`, *optional*): `"cpu"`, `"cuda"`, `"cuda:1"`...; defaults to CUDA when available.
        devices (`list[str]` or `str`, *optional*): label several subsets at once, one worker process per device;
            `"auto"` uses every visible GPU when there are several.
        sft_overrides (`dict`, *optional*): any other `trl.SFTConfig` fields, e.g. `{"warmup_ratio": 0.1}`.
        output_dir (`str`, *optional*): where the trainer writes; a temporary folder by default (nothing is saved).

        > Generated-answer metrics (used only when `metrics=` is passed to [`run_labeling`] or
        > [`finetune_and_evaluate`])

        generation_num_samples (`int`, *optional*, defaults to `16`): eval prompts answered per eval set: a sample
            drawn with `seed`, the same for every subset, so that scores compare across subsets.
        generation_max_new_tokens (`int`, *optional*, defaults to `64`): tokens generated per answer (greedy).
        generation_batch_size (`int`, *optional*, defaults to `8`): prompts per `generate` call.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig
    >>> config = LabelingConfig(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", max_steps=10)
    >>> config.finetuning, config.learning_rate
    ('lora', 0.0002)
    ```
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "The base model: a Hub id or a folder."})
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file in the model folder to dequantise."})
    revision: str | None = field(default=None, metadata={"help": "The base model's revision on the Hub."})
    finetuning: str = field(
        default="lora", metadata={"help": "LoRA through PEFT, or full finetuning.", "choices": ["lora", "full"]}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str | list[str] = field(default="all-linear", metadata={"help": "Modules LoRA adapts."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Defaults to 2e-4 with LoRA and 2e-5 for full finetuning."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over each subset."})
    max_steps: int = field(default=-1, metadata={"help": "When positive, train this many steps instead."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Training batch size."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example; longer ones are truncated."})
    seed: int = field(default=42, metadata={"help": "The same seed for every subset."})
    text_format: str = field(
        default="auto",
        metadata={
            "help": "Chat template, an Alpaca-style text prompt, or chat when the tokenizer has a template.",
            "choices": ["auto", "conversational", "text"],
        },
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1...; CUDA when available."})
    devices: list[str] | str | None = field(
        default=None, metadata={"help": "One worker process per device; 'auto' uses every visible GPU."}
    )
    sft_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Other trl.SFTConfig fields."})
    output_dir: str | None = field(default=None, metadata={"help": "Trainer output folder; temporary by default."})

    # Generated-answer metrics
    generation_num_samples: int = field(
        default=16, metadata={"help": "Eval prompts answered per eval set for metrics (a seeded sample)."}
    )
    generation_max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per answer (greedy)."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})

    def __post_init__(self):
        if self.finetuning not in ("lora", "full"):
            raise ValueError(f"`finetuning` must be `'lora'` or `'full'`, got `{self.finetuning!r}`.")
        if self.text_format not in ("auto", "conversational", "text"):
            raise ValueError(f"`text_format` must be auto, conversational or text, got `{self.text_format!r}`.")
        if self.learning_rate is None:
            self.learning_rate = 2e-4 if self.finetuning == "lora" else 2e-5
        if not isinstance(self.sft_overrides, Mapping):
            raise TypeError("`sft_overrides` must be a dict of `trl.SFTConfig` field -> value.")
        for name in ("generation_num_samples", "generation_max_new_tokens", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values (recorded with every label)."""
        return to_jsonable(dataclasses.asdict(self))


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
        `sft_config` and `peft_config` (plain JSON); with `metrics`, also `eval_scores` (e.g.
        `{"eval_rougeL": 0.31}`; `eval_<name>_rougeL` for named eval sets) and their `generation` settings.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig
    >>> from hf_instructmining.labeling.runner import finetune_and_evaluate
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
    from trl import SFTTrainer

    from .callback import EvalLossCallback
    from .metrics import AnswerScorer, load_metrics

    metrics = (load_metrics(metrics) or None) if metrics is not None else None  # before any model loads

    device = _resolve_device(config.device)
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
    with tempfile.TemporaryDirectory(prefix="instructmining-sft-") as tmp:
        args = build_sft_config(config, output_dir=config.output_dir or tmp, device=device)
        trainer = SFTTrainer(
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
        start = time.perf_counter()
        eval_metrics = trainer.evaluate()
        if scorer is not None and callback is None:  # with a store, the callback scored the answers
            for name in evals:
                scorer.score(trainer.model, tokenizer, name or None)
        eval_runtime = time.perf_counter() - start
    losses = {k: float(v) for k, v in eval_metrics.items() if k.startswith("eval") and k.endswith("_loss")}
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
        "peft_config": peft_config,
    }
    if scorer is not None:
        result["eval_scores"] = dict(scorer.latest)
        result["generation"] = scorer.settings()
    del trainer, model
    gc.collect()
    return result


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
        "logging_steps": 10,
        "use_cpu": on_cpu,
        "bf16": (not on_cpu) and _bf16_supported(),
        "fp16": False,
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


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`device={device!r}` but CUDA is not available; use `device='cpu'`.")
    return device


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


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


def run_labeling(
    subsets: Sequence[Subset] | Mapping[str, Any],
    eval_dataset,
    config: LabelingConfig,
    store: LabelStore | str,
    *,
    scored_pool=None,
    indicators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Any = None,
) -> list[dict]:
    """Label every subset: finetune on it, evaluate, and record its eval loss with its mean indicators.

    Subsets that `store` already finished are skipped; unfinished ones (e.g. interrupted by a crash) are redone.
    Progress shows subsets done/total and the time left.

    Args:
        subsets (`list[Subset]` or `dict[str, datasets.Dataset]`): from [`sample_subsets`], or id -> rows.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`): the evaluation set(s).
        config ([`LabelingConfig`]): how to finetune.
        store ([`LabelStore`] or `str`): where labels go (a path opens one).
        scored_pool (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*): the scored source(s) the
            subsets were drawn from; each subset row's indicators are found by its `row_index` (and `source` for
            a dict). Without it, the indicator columns must be in the subsets' own rows.
        indicators (`list[str]` or `dict[str, dict]`, *optional*): the indicator columns to average, or column ->
            indicator options (recorded so a fitted rule can rebuild them); defaults to every known indicator column
            found.
        metrics (`str`, `evaluate.EvaluationModule` or a list of them, *optional*): also label each subset with
            metrics of greedy answers to `config.generation_num_samples` eval prompts (the same prompts for every
            subset), e.g. the path of a local copy of evaluate's `rouge` or `exact_match` module. The scores are
            recorded next to the eval loss (`eval_scores` in `"subset_done"`, `scores` in `"eval"` records), so
            `store.labels()` has a column per score (e.g. `eval_rougeL`) and `fit_rule(store, target="eval_rougeL",
            higher_is_better=True)` fits a rule to it. Metrics are loaded before any training.

    Returns:
        `list[dict]`: the `"subset_done"` record of every subset, in the order given.

    Example:

    ```py
    >>> from hf_instructmining import LabelingConfig, LabelStore, run_labeling, sample_subsets
    >>> # subsets = sample_subsets({"alpaca": scored_a, "dolly": scored_b}, n_subsets=40, subset_size=1000)
    >>> # run_labeling(subsets, eval_ds, LabelingConfig(model_name_or_path="..."), LabelStore("labels.jsonl"))
    ```
    """
    from .metrics import load_metrics, metric_sources
    from .stats import indicator_stats, resolve_indicators

    store = LabelStore(store) if isinstance(store, str | os.PathLike) else store
    subsets = _as_subsets(subsets)
    metrics = (load_metrics(metrics) or None) if metrics is not None else None
    specs = resolve_indicators(indicators, scored_pool, subsets)
    # Check every subset's indicators before any training starts.
    stats = {s.subset_id: indicator_stats(s, scored_pool, list(specs)) for s in subsets}
    first_eval = next(iter(eval_dataset.values())) if isinstance(eval_dataset, Mapping) else eval_dataset
    eval_info = {
        "fingerprint": getattr(first_eval, "_fingerprint", None)
        if not isinstance(eval_dataset, Mapping)
        else {name: getattr(ds, "_fingerprint", None) for name, ds in eval_dataset.items()},
        "num_rows": len(first_eval)
        if not isinstance(eval_dataset, Mapping)
        else {k: len(v) for k, v in eval_dataset.items()},
    }
    finished = store.finished_subsets()
    pending = [s for s in subsets if s.subset_id not in finished]
    if len(pending) < len(subsets):
        logger.info(
            "%d of %d subsets already labelled in %s; skipping them.",
            len(subsets) - len(pending),
            len(subsets),
            store.path,
        )
    context = {"eval_set": eval_info, "indicator_specs": specs, "labeling_config": config.to_dict()}
    if metrics:
        # Recorded with each label, and how worker processes reload the modules.
        context["metrics"] = metric_sources(metrics)
        unscored = [r["subset_id"] for r in store.records("subset_done") if not r.get("eval_scores")]
        if unscored:
            logger.warning(
                "%d finished subset(s) in %s have no generated-answer scores and are not redone (e.g. %s); a fit "
                "on a score needs every subset scored.",
                len(unscored),
                store.path,
                unscored[:3],
            )
    jobs = [(s, stats[s.subset_id]) for s in pending]
    from datasets.utils.tqdm import tqdm

    with tqdm(total=len(subsets), initial=len(subsets) - len(pending), unit="subset", desc="Labelling subsets") as bar:
        devices = _parallel_devices(config.devices)
        if len(devices) > 1 and len(jobs) > 1:
            from .parallel import label_in_parallel

            label_in_parallel(jobs, eval_dataset, config, store.path, context, devices, on_done=lambda: bar.update(1))
        else:
            for subset, subset_stats in jobs:
                label_subset(subset, subset_stats, eval_dataset, config, store, context, metrics=metrics)
                bar.update(1)
    done = {r["subset_id"]: r for r in store.records("subset_done")}
    return [done[s.subset_id] for s in subsets if s.subset_id in done]


def label_subset(
    subset: Subset,
    stats: dict,
    eval_dataset,
    config: LabelingConfig,
    store: LabelStore,
    context: dict,
    metrics: Any = None,
):
    """Finetune and evaluate on one subset, then write its `"subset_done"` record (the label).

    Without loaded `metrics`, the metric modules named in `context["metrics"]` are loaded from their script paths
    (how a worker process gets them).
    """
    if metrics is None and context.get("metrics"):
        metrics = [source["path"] for source in context["metrics"]]
    metadata = {"eval_set": context["eval_set"]}
    result = finetune_and_evaluate(
        subset.dataset,
        eval_dataset,
        config,
        store=store,
        subset_id=subset.subset_id,
        metadata=metadata,
        metrics=metrics,
    )
    return store.append(
        {
            "kind": "subset_done",
            "subset_id": subset.subset_id,
            **result,
            "composition": subset.composition,
            "ratios": subset.ratios,
            "subset_seed": subset.seed,
            "indicator_means": {col: s["mean"] for col, s in stats.items()},
            "indicator_stats": stats,
            **context,
            "library_versions": library_versions(),
        }
    )


def _as_subsets(subsets) -> list[Subset]:
    if isinstance(subsets, Mapping):
        subsets = [Subset(str(k), ds, composition={}, ratios={}, seed=None) for k, ds in subsets.items()]
    subsets = list(subsets)
    if not subsets or not all(isinstance(s, Subset) for s in subsets):
        raise TypeError("`subsets` must be a non-empty list from `sample_subsets` or a dict of id -> Dataset.")
    ids = [s.subset_id for s in subsets]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Subset ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}.")
    return subsets


def _parallel_devices(devices) -> list[str]:
    if devices is None:
        return []
    if devices == "auto":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if count > 1 else []
    return list(devices)
