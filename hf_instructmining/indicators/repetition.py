"""`compression_ratio`: how much of the response repeats itself, measured by how well it compresses.

A response that loops ("A dictionary is a dict and a dict is a dictionary...") compresses far better than one that
keeps saying new things. The column is `(len(zlib(r)) - len(zlib(""))) / len(r)` over the UTF-8 bytes of the
response `r` at zlib's level 9: about 1 for short or varied text, about 0.4-0.6 for ordinary English prose of a few
hundred words (its own redundancy), and towards 0 for text that repeats itself. Subtracting the compressed size of
the empty string removes zlib's fixed header and checksum, which would otherwise dominate short responses. Cheap
(no model) and robust where perplexity is not: a language model finds repetitive text easy to predict, so
perplexity is lowest on exactly these degenerate answers. Compression as a repetition signal is standard in data
filtering, e.g. the compression-ratio filters of large pretraining pipelines.
"""

import zlib

from ..formats import InstructionPairs
from .base import Indicator


_LEVEL = 9
_EMPTY = len(zlib.compress(b"", _LEVEL))


class CompressionRatio(Indicator):
    """The `compression_ratio` column: compressed over raw size of the response (lower repeats more).

    Args:
        **kwargs: `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import CompressionRatio
    >>> loop = "A dict is a dictionary and a dictionary is a dict. " * 8
    >>> varied = "Use a dict to map keys to values: d = {'a': 1}; d['a'] returns 1, and d.get('b', 0) gives 0."
    >>> [round(v, 2) for v in CompressionRatio()({"instruction": ["?", "?"], "output": [loop, varied]})["compression_ratio"]]
    [0.08, 0.92]
    ```
    """

    name = "compression_ratio"

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        values = []
        for response in pairs.responses:
            raw = response.encode("utf-8")
            values.append((len(zlib.compress(raw, _LEVEL)) - _EMPTY) / len(raw))
        return {self.name: values}
