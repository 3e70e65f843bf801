"""`instructmining env`: print the versions and devices that a bug report needs, and what runs offline."""

import importlib.metadata
import os
import platform
from dataclasses import dataclass

from ._io import make_command_parser


PACKAGES = (
    "hf-instructmining",
    "torch",
    "transformers",
    "datasets",
    "trl",
    "peft",
    "huggingface_hub",
    "evaluate",
    "flaml",
    "statsmodels",
    "sentence-transformers",
    "faiss-cpu",
    "ray",
)


@dataclass
class EnvArguments:
    """`instructmining env` takes no options."""


def make_parser():
    return make_command_parser(
        "env",
        (EnvArguments,),
        "Print versions and devices for bug reports, the Hub's state, and the models and rules that run offline.",
        "  instructmining env\n  HF_HUB_OFFLINE=1 instructmining env",
    )


def main(_: EnvArguments) -> dict[str, str]:
    rows = {"python": platform.python_version(), "platform": platform.platform()}
    for package in PACKAGES:
        try:
            rows[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            rows[package] = "not installed"
    import torch

    rows["cuda devices"] = str(torch.cuda.device_count()) if torch.cuda.is_available() else "none"
    rows["cpu threads"] = str(torch.get_num_threads())
    rows.update(offline_rows())
    return rows


def offline_rows() -> dict[str, str]:
    """The Hub's state, each offline model copy (where it is, or how to install it), the rules that run offline."""
    from huggingface_hub import constants

    from ..offline import OFFLINE_COPIES, example_data_path, hub_reachable
    from ..scoring.plan import offline_rules

    if constants.HF_HUB_OFFLINE:
        rows = {"hub": "offline (HF_HUB_OFFLINE=1): offline copies stand in for uncached models"}
    else:
        rows = {
            "hub": "reachable" if hub_reachable() else "not reachable: offline copies stand in for uncached models"
        }
    for model_id, copy in OFFLINE_COPIES.items():
        if not copy.installed:
            where = f"not installed: `{copy.install}`"
        else:
            ready = os.path.isfile(os.path.join(copy.folder(), "config.json"))
            where = f"{copy.folder()} ({copy.package} {copy.version}{'' if ready else ', converted on first use'})"
        rows[f"offline {model_id}"] = where
    rows["offline rules"] = ", ".join(offline_rules()) or "none"
    rows["example data"] = example_data_path()
    return rows
