"""`LabelingConfig`: how each training subset is finetuned and evaluated in a labelling run."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._json import to_jsonable


DTYPES = ("auto", "bfloat16", "float16", "float32")


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
        dtype (`str`, *optional*, defaults to `"auto"`): the precision of training: `"bfloat16"` (mixed precision:
            float32 weights, bf16 autocast), `"float16"` (CUDA only), `"float32"`, or `"auto"` for bf16 where the
            device computes it natively (GPUs with bf16, CPUs with AMX-BF16 or AVX512-BF16) and float32 elsewhere.
            The evaluation after training, the label, always runs in float32: under bf16 autocast an eval loss
            moves by about 5e-3, ten times a LoRA run's seed-to-seed spread, while bf16 training moved it by about
            1e-4. Still, compare labels trained at one precision only.
        fused_lm_head (`bool`, *optional*): compute the loss with TRL's fused, chunked LM head (`True`) or with the
            model's own cross-entropy, its LM head applied at the response tokens only (`False`). `None` (the
            default) fuses on accelerators, where not materialising the logits saves memory, and not on the CPU,
            where the fused head also scores entropy and top-1 accuracy at every position and took half of each
            training step (SmolLM2-135M, `benchmarks/RESULTS.md`). Both give the same loss (eval losses agree to
            1e-5).
        devices (`list[str]` or `str`, *optional*): label several subsets at once, one worker process per device
            (a list, or a comma-separated string such as `"cuda:0,cuda:1"`); `"auto"` uses every visible GPU when
            there are several.
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
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Training precision; auto: bf16 where the device computes it natively, else float32.",
            "choices": list(DTYPES),
        },
    )
    fused_lm_head: bool | None = field(
        default=None,
        metadata={"help": "TRL's fused LM-head loss (true) or the model's own (false); default: fused off the CPU."},
    )
    devices: list[str] | str | None = field(
        default=None,
        metadata={"help": "One worker process per device (cuda:0,cuda:1); 'auto' uses every visible GPU."},
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
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {list(DTYPES)}, got `{self.dtype!r}`.")
        if self.text_format not in ("auto", "conversational", "text"):
            raise ValueError(f"`text_format` must be auto, conversational or text, got `{self.text_format!r}`.")
        if self.learning_rate is None:
            self.learning_rate = 2e-4 if self.finetuning == "lora" else 2e-5
        if isinstance(self.devices, str) and self.devices != "auto":
            self.devices = [device.strip() for device in self.devices.split(",") if device.strip()]
        if not isinstance(self.sft_overrides, Mapping):
            raise TypeError("`sft_overrides` must be a dict of `trl.SFTConfig` field -> value.")
        for name in (
            "lora_r",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "max_length",
            "generation_num_samples",
            "generation_max_new_tokens",
            "generation_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values (recorded with every label)."""
        return to_jsonable(dataclasses.asdict(self))
