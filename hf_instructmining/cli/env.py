"""`instructmining env`: print the versions and devices that a bug report needs."""

import importlib.metadata
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
        "env", (EnvArguments,), "Print versions and devices for bug reports.", "  instructmining env"
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
    return rows
