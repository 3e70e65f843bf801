"""Availability checks for optional dependencies, computed once per process.

Modules never import an optional package at top level: they call `require(...)` at the use site, so
`import hf_instructmining` stays light and a missing package fails with a message that names the extra to install.
`is_<pkg>_available()` exists for the packages of the extras (faiss, ray) that tests skip without.
"""

import importlib.metadata
import importlib.util
from functools import cache

from packaging.version import Version


# package import name -> (distribution name, minimum version, extra that installs it), for each `require`d package
_OPTIONAL = {
    "trl": ("trl", "0.20", None),
    "peft": ("peft", "0.15", None),
    "flaml": ("flaml", "2.3", None),
    "statsmodels": ("statsmodels", "0.14", None),
    "evaluate": ("evaluate", "0.4", None),
    "matplotlib": ("matplotlib", "3.8", None),
    "faiss": ("faiss-cpu", "1.8", "faiss"),
    "ray": ("ray", "2.40", "ray"),
}


@cache
def _is_available(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    dist, floor, _ = _OPTIONAL[module]
    try:
        return Version(importlib.metadata.version(dist)) >= Version(floor)
    except importlib.metadata.PackageNotFoundError:
        # Importable but installed under another distribution name (e.g. faiss-gpu): accept it.
        return True


def is_faiss_available() -> bool:
    return _is_available("faiss")


def is_ray_available() -> bool:
    return _is_available("ray")


def require(module: str, used_by: str) -> None:
    """Raise an `ImportError` naming `used_by`, the package and the pip command when `module` is missing."""
    if _is_available(module):
        return
    dist, floor, extra = _OPTIONAL[module]
    target = f"hf-instructmining[{extra}]" if extra else "hf-instructmining"
    raise ImportError(
        f"{used_by} needs `{dist}>={floor}`, which is not installed. Install it with `pip install {target}` "
        f"(or `pip install '{dist}>={floor}'`)."
    )
