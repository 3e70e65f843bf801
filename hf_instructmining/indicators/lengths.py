"""`input_length` and `output_length`: how long the instruction and the response are.

Lengths are counted in tokens of a given tokenizer (a local path or a Hub id; InstructMining counts in the
tokens of the model whose perplexity the rule uses), or in whitespace-separated words when no tokenizer is
given. Special tokens (BOS/EOS) are not counted: the length is the text's, not the model input's.
"""

from ..formats import InstructionPairs
from ..loading import load_tokenizer
from .base import Indicator, check_revision


class _Length(Indicator):
    """Shared logic: count tokens of one side of the pair with a tokenizer, or whitespace words."""

    _side: str = ""
    rule_options = ("tokenizer", "revision")

    def __init__(self, tokenizer: str | None = None, revision: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if tokenizer is not None and not isinstance(tokenizer, str):
            raise TypeError(
                f"`tokenizer` must be a Hub id or a local path (a string), got {type(tokenizer).__name__}; "
                "indicators hold names, not loaded objects, so that they pickle and fingerprint cheaply."
            )
        check_revision(revision)
        self.tokenizer = tokenizer
        self.revision = revision

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        texts = pairs.instructions if self._side == "instruction" else pairs.responses
        if self.tokenizer is None:
            return {self.name: [float(len(text.split())) for text in texts]}
        tokenizer = load_tokenizer(self.tokenizer, self.revision)
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {self.name: [float(len(ids)) for ids in encoded]}

    def spec(self) -> dict:
        return {"tokenizer": self.tokenizer, "revision": self.revision}


class InputLength(_Length):
    """The `input_length` column: tokens in the instruction (including the Alpaca `input`).

    Args:
        tokenizer (`str`, *optional*): Hub id or local path of the tokenizer; whitespace words when `None`.
        revision (`str`, *optional*): the tokenizer's revision on the Hub.
        **kwargs: `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import InputLength
    >>> InputLength()({"instruction": "Translate to French:", "input": "good morning", "output": "bonjour"})
    {'input_length': 5.0}
    ```
    """

    name = "input_length"
    _side = "instruction"


class OutputLength(_Length):
    """The `output_length` column: tokens in the response.

    Args:
        tokenizer (`str`, *optional*): Hub id or local path of the tokenizer; whitespace words when `None`.
        revision (`str`, *optional*): the tokenizer's revision on the Hub.
        **kwargs: `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import OutputLength
    >>> OutputLength()({"prompt": "Say hi", "completion": "Hello there, friend."})
    {'output_length': 3.0}
    ```
    """

    name = "output_length"
    _side = "response"
