"""MTLD: the measure of textual lexical diversity of the response (McCarthy & Jarvis, 2010).

MTLD is the mean length of the stretches of text over which the type-token ratio (TTR) stays above a
threshold (0.72). Walking the tokens, each time the running TTR of the current stretch falls to the threshold
or below, one "factor" is counted and the stretch restarts; the leftover stretch adds a partial factor
`(1 - ttr) / (1 - threshold)`. MTLD = tokens / factors, averaged over a forward and a backward pass
(the bidirectional form). InstructMining uses it as an indicator of response richness (paper, Table 1).

Tokenisation is the one of the `lexicalrichness` package, so values agree with it exactly: lower-case, delete
ASCII digits and the dashes `-`, `–`, `—`, replace every other ASCII punctuation character with a space, and split
on whitespace.

Edge cases, defined here because the formula divides by zero on them:
- a response with no tokens after tokenisation (only digits or punctuation) gets `0.0` (no lexical diversity);
- a response whose TTR never falls to the threshold (e.g. one word, or all-distinct words) counts one factor when
  every token is distinct, so a one-word response gets `1.0` and `n` distinct words get `n`.
"""

import string
from collections.abc import Sequence

from ..formats import InstructionPairs
from .base import Indicator


_DELETE = "0123456789-\u2013\u2014"
_TABLE = str.maketrans(
    {**{c: None for c in _DELETE}, **{c: " " for c in string.punctuation if c not in _DELETE}},
)


def tokenize(text: str) -> list[str]:
    """Split a text into the lower-cased word tokens that MTLD counts (see the module docstring)."""
    return text.lower().translate(_TABLE).split()


def _one_direction(tokens: Sequence[str], threshold: float, num_types: int) -> float:
    terms: set[str] = set()
    count = 0
    factors = 0.0
    ttr = 1.0
    for token in tokens:
        count += 1
        terms.add(token)
        ttr = len(terms) / count
        if ttr <= threshold:
            count = 0
            terms = set()
            factors += 1
    if count > 0:
        factors += (1 - ttr) / (1 - threshold)
    if factors == 0:
        # The TTR never left 1 within any stretch: fall back to the whole text's TTR.
        whole = num_types / len(tokens)
        factors = 1.0 if whole == 1 else (1 - whole) / (1 - threshold)
    return len(tokens) / factors


def mtld(text_or_tokens: str | Sequence[str], threshold: float = 0.72) -> float:
    """Bidirectional MTLD of a text (or of already tokenised words).

    Args:
        text_or_tokens (`str` or `Sequence[str]`): the text, tokenised with [`tokenize`], or a token list.
        threshold (`float`, *optional*, defaults to `0.72`): the TTR factor threshold, in (0, 1).

    Returns:
        `float`: the mean of the forward and backward MTLD; `0.0` when there are no tokens.

    Example:

    ```py
    >>> from hf_instructmining.indicators.mtld import mtld
    >>> mtld("the cat sat on the mat and the dog sat on the log")
    13.0
    >>> mtld("hello"), mtld("")
    (1.0, 0.0)
    ```
    """
    tokens = tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else list(text_or_tokens)
    if not tokens:
        return 0.0
    num_types = len(set(tokens))
    forward = _one_direction(tokens, threshold, num_types)
    backward = _one_direction(tokens[::-1], threshold, num_types)
    return (forward + backward) / 2


class MTLD(Indicator):
    """The `mtld` column: bidirectional MTLD lexical diversity of the response (McCarthy & Jarvis, 2010).

    Args:
        threshold (`float`, *optional*, defaults to `0.72`): the TTR factor threshold, in (0, 1).
        **kwargs: `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining.indicators import MTLD
    >>> ds = Dataset.from_list([{"instruction": "Say hi", "output": "Hello there, friend."}])
    >>> ds.map(MTLD(), batched=True)[0]["mtld"]
    3.0
    ```
    """

    name = "mtld"
    version = "1"
    rule_options = ("threshold",)

    def __init__(self, threshold: float = 0.72, **kwargs):
        super().__init__(**kwargs)
        if not 0 < threshold < 1:
            raise ValueError(f"The MTLD threshold must be in (0, 1), got `{threshold}`.")
        self.threshold = float(threshold)

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        return {self.name: [mtld(response, self.threshold) for response in pairs.responses]}

    def spec(self) -> dict:
        return {"threshold": self.threshold}
