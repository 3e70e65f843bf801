"""Finetuning options shared by `instructmining label` and `instructmining search`."""

import os
from dataclasses import dataclass, field

from ._io import check_device, json_object


@dataclass
class FinetuneArguments:
    """The base model and how each subset is finetuned (a subset of `LabelingConfig`, as flags).

    Args:
        model_name_or_path (`str`):
            The base model: a Hub id or a local folder.
        eval_dataset (`str`):
            The evaluation set: a file, saved dataset folder or Hub id.
        gguf_file (`str`, *optional*):
            A GGUF file inside `model_name_or_path` to dequantise and train.
        finetuning (`str`, *optional*, defaults to `"lora"`):
            `lora` (PEFT) or `full`.
        learning_rate (`float`, *optional*):
            Defaults to 2e-4 with LoRA and 2e-5 for full finetuning.
        num_train_epochs (`float`, *optional*, defaults to `1.0`):
            Epochs over each subset.
        max_steps (`int`, *optional*, defaults to `-1`):
            When positive, train this many steps instead.
        per_device_train_batch_size (`int`, *optional*, defaults to `4`):
            Training batch size.
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per example.
        lora_r (`int`, *optional*, defaults to `8`):
            LoRA rank.
        device (`str`, *optional*):
            `cpu`, `cuda`, `cuda:1`; CUDA when available.
        training_seed (`int`, *optional*, defaults to `42`):
            Training seed, the same for every subset.
        sft_overrides (`str`, *optional*):
            JSON object of other `trl.SFTConfig` fields, e.g. `{"warmup_ratio": 0.1}` (a mapping in a YAML config).
    """

    model_name_or_path: str = field(default=None, metadata={"help": "The base model: a Hub id or a local folder."})
    eval_dataset: str = field(default=None, metadata={"help": "Evaluation set: a file, dataset folder or Hub id."})
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file in the model folder to dequantise."})
    finetuning: str = field(default="lora", metadata={"help": "LoRA (PEFT) or full.", "choices": ["lora", "full"]})
    learning_rate: float | None = field(default=None, metadata={"help": "2e-4 with LoRA, 2e-5 full, by default."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over each subset."})
    max_steps: int = field(default=-1, metadata={"help": "When positive, train this many steps instead."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Training batch size."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1; CUDA when available."})
    training_seed: int = field(default=42, metadata={"help": "Training seed, the same for every subset."})
    sft_overrides: str | None = field(default=None, metadata={"help": "JSON object of other trl.SFTConfig fields."})

    def __post_init__(self):
        for name in ("model_name_or_path", "eval_dataset"):
            if not getattr(self, name):
                raise ValueError(f"`--{name}` is required.")
        check_device(self.device)
        for name in ("per_device_train_batch_size", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name}` must be at least 1, got {getattr(self, name)}.")

    def base_model(self) -> str:
        """`--model_name_or_path`, or its offline copy when the Hub cannot serve it; fails fast when neither loads."""
        from ..offline import hub_reachable, in_hub_cache, log_substitution, offline_substitute

        model = self.model_name_or_path
        if self.gguf_file or os.path.isdir(model):
            return model
        local = offline_substitute(model)
        if local is not None:
            log_substitution(model, local)
            return local
        if not in_hub_cache(model) and not hub_reachable():
            raise ValueError(
                f"`--model_name_or_path {model}` is not a local folder, not in the Hugging Face cache, and the Hub "
                "is not reachable (or `HF_HUB_OFFLINE=1`); give a local model folder."
            )
        return model

    def labeling_config(self):
        from ..labeling import LabelingConfig

        overrides = json_object(self.sft_overrides, "sft_overrides") or {}
        return LabelingConfig(
            model_name_or_path=self.base_model(),
            gguf_file=self.gguf_file,
            finetuning=self.finetuning,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            max_length=self.max_length,
            lora_r=self.lora_r,
            device=self.device,
            seed=self.training_seed,
            sft_overrides=overrides,
        )
