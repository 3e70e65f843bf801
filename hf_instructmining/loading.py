"""Load tokenizers and models once per process, through the ordinary `from_pretrained` code.

Every indicator that needs a tokenizer or a model asks this module for it, so that two indicators naming the
same checkpoint share one load (e.g. `input_length` and `output_length`, or the three UniEval columns).
Loading never trusts remote code unless the caller says so explicitly.
"""

import logging
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
