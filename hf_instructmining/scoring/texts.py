"""A digest of the texts that were scored, recorded with the score column and checked before publishing.

The indicator columns and `instruct_score` describe the texts they were computed from. Replace an output after
scoring and the formula still reproduces the score from the (now stale) indicator columns, so the rule check alone
passes. [`~hf_instructmining.compute_indicators`] therefore records, with the score column, a digest of every row's
texts (the columns a layout reads: `instruction`, `input`, `output`, `prompt`, `completion`, `messages`), and
[`~hf_instructmining.scoring.provenance.check_scores`] recomputes it.

The digest is the sum, modulo 2**128, of each row's BLAKE2b digest: it does not depend on the rows' order (so
`shuffle` and `sort` keep it), and it ties each row's texts together (so swapping outputs between rows changes
it). It can only be checked on the rows that were scored: after `select` or `filter` has dropped rows it says
nothing. It guards against mistakes, not forgers: anyone can recompute it over forged texts, and a multiset sum
of 128-bit digests is not collision-resistant against someone who searches for a collision on purpose.
"""

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..formats import ROLES


if TYPE_CHECKING:
    from datasets import Dataset


logger = logging.getLogger(__name__)

_BATCH_SIZE = 10_000
_MODULUS = 2**128


def text_columns(columns: Sequence[str], column_mapping: Mapping[str, str] | None = None) -> list[str]:
    """The columns among `columns` that a layout reads texts from (roles renamed by `column_mapping`)."""
    mapping = dict(column_mapping or {})
    return [c for c in dict.fromkeys(mapping.get(role, role) for role in ROLES) if c in columns]


def digest(ds: "Dataset", columns: Sequence[str]) -> str:
    """The order-free digest of the rows' values in `columns` (hex).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining.scoring.texts import digest
    >>> ds = Dataset.from_dict({"instruction": ["a", "b"], "output": ["x", "y"]})
    >>> digest(ds, ["instruction", "output"]) == digest(ds.shuffle(seed=0), ["instruction", "output"])
    True
    >>> swapped = Dataset.from_dict({"instruction": ["a", "b"], "output": ["y", "x"]})
    >>> digest(ds, ["instruction", "output"]) == digest(swapped, ["instruction", "output"])
    False
    ```
    """
    total = 0
    table = ds.select_columns(list(columns)).with_format("arrow")
    for batch in table.iter(batch_size=_BATCH_SIZE):
        values = [batch.column(c).to_pylist() for c in columns]
        for row in zip(*values, strict=True):
            data = b"".join(map(_encode, row))
            total += int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")
    return f"{total % _MODULUS:032x}"


def _encode(value: Any) -> bytes:
    # Tagged and length-prefixed, so that no two rows encode alike; strings skip JSON, which halves the time.
    if isinstance(value, str):
        tag, data = b"s", value.encode()
    else:
        tag, data = b"j", json.dumps(value, ensure_ascii=False, sort_keys=True, default=str).encode()
    return tag + len(data).to_bytes(8, "big") + data


def record(ds: "Dataset", column_mapping: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """What to record of the scored texts: their columns, the number of rows and the digest (`None`: no texts)."""
    columns = text_columns(ds.column_names, column_mapping)
    if not columns:
        return None
    return {"columns": columns, "rows": len(ds), "digest": digest(ds, columns)}


def changed(ds: "Dataset", recorded: Any) -> str | None:
    """Why `ds`'s texts are not the ones scored, or `None` when they are or it cannot be told (rows were added or
    dropped, a text column is gone, or nothing usable is recorded)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("columns"), list):
        return None
    columns = recorded["columns"]
    if recorded.get("rows") != len(ds) or not all(isinstance(c, str) and c in ds.column_names for c in columns):
        logger.info("The texts cannot be checked against the scored ones: rows or text columns differ.")
        return None
    if digest(ds, columns) == recorded.get("digest"):
        return None
    listed = ", ".join(f"`{c}`" for c in columns)
    return (
        f"the texts in {listed} are not the ones that were scored (their digest differs from the one recorded at "
        "scoring time: were outputs replaced after scoring?)"
    )
