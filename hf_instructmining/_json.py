"""One JSON cleaner for everything the package writes: label records, rule files, card metadata, score records."""

import math
from collections.abc import Mapping
from typing import Any


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value`: NaN/inf become `None`, numpy and torch scalars and arrays become Python numbers
    and lists, sets sorted lists, enums their value, and any other object its `str`.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_instructmining._json import to_jsonable
    >>> to_jsonable({"a": np.float32(0.5), "b": float("nan"), 3: (np.arange(2), {"y", "x"})})
    {'a': 0.5, 'b': None, '3': [[0, 1], ['x', 'y']]}
    ```
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):  # sorted: a set's order changes between processes
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return to_jsonable(value.item())
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:  # numpy / torch arrays
        return to_jsonable(value.tolist())
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ == "enum":
        return to_jsonable(value.value)
    return str(value)
