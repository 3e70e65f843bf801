"""The shared base of the model-based indicators: options in `__init__`, lazy per-process loading, devices.

An indicator holds only names and options (model id or path, revision, device, dtype, batching); the model and
tokenizer load on the first call through [`~hf_instructmining.loading`], which caches them per process and
device, so two indicators naming the same model share one load and fingerprints never hash weights.
"""

from typing import Any, ClassVar

from ..loading import load_model, load_tokenizer, resolve_device, resolve_dtype
from .base import Indicator, check_revision


# Token budget per batch (rows x padded length). On a CPU a batch only has to keep the matrix multiplies busy, and
# in float32 small batches keep each layer's activations in cache: 1,024 tokens ran SmolLM2 perplexity 1.04x and
# MiniLM embeddings 1.1-1.2x faster than 4,096 (benchmarks/RESULTS.md). In bf16 on an AMX-BF16 Xeon, oneDNN's
# matmul ran SmolLM2's 576-wide projections at about 1,400 GFLOP/s for 512 to 1,400 rows and 2,600-3,200 from 1,400
# rows up, and 4,096 tokens scored the offline rule 1.2x faster than 1,024 (8,192: slower again). GPUs want far more.
CPU_MAX_TOKENS = 1024
CPU_BF16_MAX_TOKENS = 4096
GPU_MAX_TOKENS = 32768
# `model_max_length` of tokenizers that set none.
_NO_LIMIT = 10**8


class ModelIndicator(Indicator):
    """Base of indicators that run a `transformers` model (see [`RewardScore`], [`Perplexity`], [`UniEval`]).

    Args:
        model (`str`, *optional*): Hub id or local folder; the class's default model when `None`.
        revision (`str`, *optional*): a branch, tag or commit on the Hub.
        device (`str`, *optional*): `"cpu"`, `"cuda"`, `"cuda:1"`, or `None` for a GPU when one is visible. With
            `Dataset.map(..., with_rank=True, num_proc=n)`, worker `rank` uses GPU `rank % n_gpus`.
        dtype (`str`, *optional*): `"float32"`, `"bfloat16"`, `"float16"`, or `None`/`"auto"` for bf16 where the
            hardware computes it natively (GPUs, CPUs with AMX-BF16 or AVX512-BF16) and float32 elsewhere. Losses,
            log-probabilities and embedding norms are computed in float32 from upcast outputs either way;
            `"float32"` keeps values exact. An indicator whose bf16 values failed the accuracy contract sets
            `auto_dtype` to what `"auto"` means for it instead ([`KNNDistance`]: float32).
        max_tokens (`int`, *optional*): token budget per batch (rows x padded length); by default 1,024 on a CPU in
            float32, 4,096 on a CPU in bf16 and 32,768 on a GPU.
        max_length (`int`, *optional*): truncate inputs to this many tokens; the model's context by default.
        trust_remote_code (`bool`, *optional*, defaults to `False`): run code from the model repository.
        **kwargs: `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).
    """

    default_model: ClassVar[str] = ""
    task: ClassVar[str] = ""
    # What `dtype=None`/`"auto"` runs in; `None`: the device's default (`loading.default_dtype`).
    auto_dtype: ClassVar[str | None] = None
    _transient = ("_model", "_tokenizer", "_device")
    # A Hub id or a folder (the rule checks which), its revision, and settings that change no code path.
    rule_options = ("model", "revision", "dtype", "max_tokens", "max_length")

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_tokens: int | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if model is not None and not isinstance(model, str):
            raise TypeError(
                f"`model` must be a Hub id or a local path (a string), got {type(model).__name__}; indicators hold "
                "names, not loaded objects, so that they pickle and fingerprint cheaply."
            )
        check_revision(revision)
        for name, value in (("max_tokens", max_tokens), ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got `{value!r}`.")
        self.model = model or self.default_model
        self.revision = revision
        self.device = device
        if dtype in (None, "auto") and self.auto_dtype is not None:
            dtype = self.auto_dtype
        self.dtype = str(dtype).removeprefix("torch.") if dtype is not None else None
        self.max_tokens = max_tokens
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self._model = self._tokenizer = self._device = None

    def load(self, rank: int | None = None) -> tuple[Any, Any, str]:
        """Load (once per process and device) and return `(model, tokenizer, device)`."""
        device = resolve_device(self.device, rank)
        if self._model is None or self._device != device:
            self._tokenizer = self.load_tokenizer()
            self._model = load_model(
                self.model, self.task, self.revision, device, self.dtype, trust_remote_code=self.trust_remote_code
            )
            self._device = device
        return self._model, self._tokenizer, device

    def load_tokenizer(self):
        """The tokenizer alone (cheap; enough to tell the prompt format)."""
        return load_tokenizer(self.model, self.revision, self.trust_remote_code)

    def token_budget(self, device: str) -> int:
        """`max_tokens`, else the default budget for `device` and the dtype the model runs in there."""
        if self.max_tokens:
            return self.max_tokens
        if device.startswith("cuda"):
            return GPU_MAX_TOKENS
        return CPU_MAX_TOKENS if resolve_dtype(self.dtype, device).itemsize == 4 else CPU_BF16_MAX_TOKENS

    def context_length(self, model, tokenizer) -> int:
        """`max_length`, else the smaller of the model's positions and the tokenizer's `model_max_length`."""
        if self.max_length is not None:
            return self.max_length
        limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < _NO_LIMIT]
        return min(limits) if limits else _NO_LIMIT

    def spec(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision}

    def metadata(self) -> dict[str, Any]:
        """How the column was made, for provenance and dataset cards: `spec()`, the kind of device the model runs on
        and the dtype it runs in (resolved from `"auto"` for that device), and choices resolved from the model's
        files (subclasses add those)."""
        device = self._device or resolve_device(self.device)
        dtype = str(resolve_dtype(self.dtype, device)).removeprefix("torch.")
        return {**self.spec(), "device": device.split(":")[0], "dtype": dtype}


def render_chat(tokenizer, prompts: list[list[dict]], responses: list[str]) -> tuple[list[str], list[str]]:
    """Render each conversation with the tokenizer's chat template; returns (prompt texts, response texts).

    The prompt text ends with the generation prompt; the response text is what the template adds for the
    assistant turn (the response and any end-of-turn tokens).

    Raises:
        `ValueError`: the template renders the prompt differently once the response is added.
    """
    prompt_texts, response_texts = [], []
    for messages, response in zip(prompts, responses, strict=True):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(
                "The tokenizer's chat template renders the conversation differently once the response is added, "
                "so the response cannot be told apart; pass the plain format instead."
            )
        prompt_texts.append(prompt)
        response_texts.append(full[len(prompt) :])
    return prompt_texts, response_texts
