"""What `instructmining label` and `instructmining search` add to `LabelingConfig`: the eval set, and the checks and
offline model resolution that come before any training."""

import dataclasses
import os
from dataclasses import dataclass, field

from ._io import check_device


@dataclass
class EvalArguments:
    """The evaluation set every finetuning is evaluated on (the library takes the `Dataset` itself).

    Args:
        eval_dataset (`str`):
            The evaluation set: a file, saved dataset folder or Hub id.
    """

    eval_dataset: str = field(default=None, metadata={"help": "Evaluation set: a file, dataset folder or Hub id."})

    def __post_init__(self):
        if not self.eval_dataset:
            raise ValueError("`--eval_dataset` is required.")


def training_config(config):
    """`config` ready to train: the base model given, `--device` known to torch, and the base model replaced by its
    offline copy when the Hub cannot serve it (failing fast when neither loads)."""
    from ..offline import hub_reachable, in_hub_cache, log_substitution, offline_substitute

    if not config.model_name_or_path:
        raise ValueError("`--model_name_or_path` is required.")
    check_device(config.device)
    model = config.model_name_or_path
    if config.gguf_file or os.path.isdir(model):
        return config
    local = offline_substitute(model)
    if local is not None:
        log_substitution(model, local)
        return dataclasses.replace(config, model_name_or_path=local)
    if not in_hub_cache(model) and not hub_reachable():
        raise ValueError(
            f"`--model_name_or_path {model}` is not a local folder, not in the Hugging Face cache, and the Hub "
            "is not reachable (or `HF_HUB_OFFLINE=1`); give a local model folder."
        )
    return config
