"""Load tokenizers and models once per process, through the ordinary `from_pretrained` code.

Every indicator that needs a tokenizer or a model asks this module for it, so that two indicators naming the
same checkpoint share one load (e.g. `input_length` and `output_length`, or the three UniEval columns).
Loading never trusts remote code unless the caller says so explicitly.
"""

import logging
import os
import sys
from functools import lru_cache


logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer by Hub id or local path, once per process.

    Args:
        name_or_path (`str`): a Hub id (`"meta-llama/Llama-2-7b-hf"`) or a local folder.
        revision (`str`, *optional*): a branch, tag or commit on the Hub.
        trust_remote_code (`bool`, *optional*, defaults to `False`): never on unless asked for.

    Returns:
        [`~transformers.PreTrainedTokenizerBase`]
    """
    from transformers import AutoTokenizer

    logger.info("Loading tokenizer %s (revision %s)", name_or_path, revision or "default")
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise OSError(
            f"Could not load the tokenizer `{name_or_path}`: {err}. Pass a local folder or a Hub id that exists "
            "(with `HF_HUB_OFFLINE=1`, it must already be in the cache)."
        ) from err


# `Auto*` class per task; each indicator names the task it needs.
_TASKS = {
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "encoder": "AutoModel",
}


def cuda_device_count() -> int:
    """Number of visible CUDA devices, counted without initialising CUDA (safe before `fork`, e.g. `num_proc`)."""
    import torch

    # `torch.cuda.device_count` asks NVML first, which does not poison forked workers; `is_available` would.
    return torch.cuda.device_count()


def resolve_device(device: str | None = None, rank: int | None = None) -> str:
    """Pick the device an indicator runs on.

    Args:
        device (`str`, *optional*): `"cpu"`, `"cuda"`, `"cuda:1"`, ... or `None`/`"auto"` for `cuda` when a GPU is
            visible and `cpu` otherwise.
        rank (`int`, *optional*): the worker rank `Dataset.map(..., with_rank=True, num_proc=n)` passes; with CUDA,
            worker `rank` runs on GPU `rank % device_count`.

    Returns:
        `str`: a device string for `torch.device`.

    Raises:
        `ValueError`: a CUDA device is asked for and none is visible.

    Example:

    ```py
    >>> from hf_instructmining.loading import resolve_device
    >>> resolve_device("cpu", rank=3)
    'cpu'
    ```
    """
    if device is not None and device != "auto" and not device.startswith("cuda"):
        return device
    count = cuda_device_count()
    if device in (None, "auto") and count == 0:
        return "cpu"
    if count == 0:
        raise ValueError(f"`device={device!r}` asks for CUDA, but no CUDA device is visible; pass `device='cpu'`.")
    if device not in (None, "auto", "cuda"):
        return device
    return f"cuda:{rank % count}" if rank is not None else "cuda"


# CPU features that run bf16 matrix multiplies in hardware (`torch.cpu.get_capabilities()` names). Elsewhere torch
# emulates bf16 through float32 and pays for the conversions: on a 2-core AMD EPYC (AVX2) a bf16 matmul ran about 12x
# slower than float32 (benchmarks/RESULTS.md), while AMX-BF16 Xeons ran it about 7x faster.
_NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16")
CPU_BF16_ENV = "INSTRUCTMINING_CPU_BF16"


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX-BF16 or AVX512-BF16), as torch detects it.

    The environment variable `INSTRUCTMINING_CPU_BF16` (`1` or `0`) overrides the detection, e.g. to keep
    `dtype="auto"` at float32 on a bf16 CPU. Arm CPUs are not counted yet: their bf16 speed under torch was never
    measured by this project.

    Example:

    ```py
    >>> from hf_instructmining.loading import cpu_supports_bf16
    >>> isinstance(cpu_supports_bf16(), bool)
    True
    ```
    """
    override = os.environ.get(CPU_BF16_ENV)
    if override is not None:
        if override not in ("0", "1"):
            raise ValueError(f"`{CPU_BF16_ENV}` must be `1` or `0` (or unset to detect), got `{override}`.")
        return override == "1"
    import torch

    # Older torch releases have no public feature query: float32 there, exact and never slow.
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    return any(bool(capabilities.get(name)) for name in _NATIVE_BF16_FEATURES)


def default_dtype(device: str) -> str:
    """The dtype models run in on `device` when none is asked for (`dtype="auto"`).

    `bfloat16` on GPUs that support it (else `float16`) and on CPUs that multiply bf16 in hardware (see
    [`cpu_supports_bf16`]); `float32` on other CPUs, where bf16 is emulated and slower than float32.

    Example:

    ```py
    >>> from hf_instructmining.loading import cpu_supports_bf16, default_dtype
    >>> default_dtype("cpu") == ("bfloat16" if cpu_supports_bf16() else "float32")
    True
    ```
    """
    if not device.startswith("cuda"):
        return "bfloat16" if cpu_supports_bf16() else "float32"
    import torch

    with torch.cuda.device(device):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def resolve_dtype(dtype: str | None, device: str):
    """Turn a dtype name (or `None`/`"auto"` for [`default_dtype`]) into a `torch.dtype`."""
    import torch

    name = default_dtype(device) if dtype in (None, "auto") else str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype `{dtype!r}`; use `'float32'`, `'bfloat16'`, `'float16'` or `'auto'`.")
    return value


def model_file(name_or_path: str, filename: str, revision: str | None = None) -> str | None:
    """The local path of `filename` in a model folder or Hub repo (downloaded and cached), or `None` if absent."""
    from transformers.utils import cached_file

    return cached_file(
        name_or_path,
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


@lru_cache(maxsize=8)
def load_model(
    name_or_path: str,
    task: str,
    revision: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    trust_remote_code: bool = False,
):
    """Load a model for inference, once per process and device.

    Args:
        name_or_path (`str`): a Hub id or a local folder.
        task (`str`): `"causal_lm"`, `"seq2seq_lm"`, `"sequence_classification"`, `"encoder"`, or `"reward"`
            (a sequence classifier, or an OpenAssistant `GPTNeoXRewardModel` checkpoint, see
            [`~hf_instructmining.indicators.RewardScore`]).
        revision (`str`, *optional*): a branch, tag or commit on the Hub.
        device (`str`, *optional*, defaults to `"cpu"`): where the model runs (see [`resolve_device`]).
        dtype (`str`, *optional*): a dtype name, or `None` for [`default_dtype`] of the device.
        trust_remote_code (`bool`, *optional*, defaults to `False`): never on unless asked for.

    Returns:
        `torch.nn.Module` in eval mode, with gradients off.

    Raises:
        `OSError`: the model cannot be found or read; the message says what to pass instead.
    """
    import transformers

    torch_dtype = resolve_dtype(dtype, device)
    logger.info("Loading %s model %s (revision %s) on %s", task, name_or_path, revision or "default", device)
    try:
        if task == "reward":
            from .indicators._oa_reward import is_oa_reward_checkpoint, load_oa_reward_model

            if is_oa_reward_checkpoint(name_or_path, revision):
                model = load_oa_reward_model(name_or_path, revision, torch_dtype)
                if torch_dtype.itemsize < 4:
                    _float32_head(model)
                return model.to(device).eval().requires_grad_(False)
            task = "sequence_classification"
        if task not in _TASKS:
            raise ValueError(f"Unknown task `{task}`; expected one of {[*_TASKS, 'reward']}.")
        auto_class = getattr(transformers, _TASKS[task])
        model = auto_class.from_pretrained(
            name_or_path, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        raise OSError(
            f"Could not load the model `{name_or_path}`: {err}. Pass a local folder or a Hub id that exists "
            "(with `HF_HUB_OFFLINE=1`, it must already be in the cache)."
        ) from err
    if task == "sequence_classification" and torch_dtype.itemsize < 4:
        _float32_head(model)
    return model.to(device).eval().requires_grad_(False)


def _float32_head(model) -> None:
    """Run a classifier's output layer in float32, on its input upcast: a reward is one number per text, which bf16
    would round to 3 significant digits (ties between rows), and the layer is one small matrix product."""
    import torch

    head = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    head.float()
    head.register_forward_pre_hook(
        lambda module, args: tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    )


def _torch_single_threaded_after_fork() -> None:
    # A worker that `Dataset.map(num_proc=n)` forks after the parent ran torch on CPU hangs in its first parallel op
    # (the OpenMP thread pool does not survive `fork`). Like `DataLoader` workers, forked workers use one thread.
    # Registered here, where every indicator loads its models, so bare indicators under `num_proc` are covered too.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_torch_single_threaded_after_fork)
