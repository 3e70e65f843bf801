"""Switches read from the environment: variables that take `1` or `0`, and mean "decide for me" when unset."""

import os


def env_switch(name: str) -> bool | None:
    """`True` for `1`, `False` for `0`, `None` when the variable `name` is unset.

    Raises:
        `ValueError`: any other value, in one line that names the variable.

    Example:

    ```py
    >>> from hf_instructmining._env import env_switch
    >>> env_switch("INSTRUCTMINING_NO_SUCH_SWITCH") is None
    True
    ```
    """
    value = os.environ.get(name)
    if value not in (None, "0", "1"):
        raise ValueError(f"`{name}` must be `1` or `0` (or unset), got `{value}`.")
    return None if value is None else value == "1"
