"""`unieval_naturalness`, `unieval_coherence`, `unieval_understandability`: UniEval's dialogue scores.

UniEval (Zhong et al. 2022, "Towards a Unified Multi-Dimensional Evaluator for Text Generation") asks a T5 model
a Boolean question about a response and reads the answer at the first decoder step:
score = P("Yes") / (P("Yes") + P("No")). InstructMining (arXiv 2307.06290, Sec. 3.1) uses its dialogue model,
`MingZhong/unieval-dialog`, with the instruction as the dialogue history and the response as the response.
The prompts are UniEval's own (`utils.add_question`, task `dialogue`):

- naturalness: `question: Is this a natural response in the dialogue? </s> response: {response}`
- coherence: `question: Is this a coherent response given the dialogue history? </s> response: {response}
  </s> dialogue history: {instruction}`
- understandability: `question: Is this an understandable response in the dialogue? </s> response: {response}`

One model load serves all three columns; `aspects=` chooses which to compute.
"""

from typing import Any

from ..formats import InstructionPairs
from ._batching import encode_truncated, inference, model_pass, pad, run_in_batches
from ._model_base import ModelIndicator


QUESTIONS = {
    "naturalness": "question: Is this a natural response in the dialogue? </s> response: {response}",
    "coherence": (
        "question: Is this a coherent response given the dialogue history? </s> response: {response}"
        " </s> dialogue history: {instruction}"
    ),
    "understandability": "question: Is this an understandable response in the dialogue? </s> response: {response}",
}
ASPECTS = tuple(QUESTIONS)
# UniEval's scorer truncates its inputs (on the right) to 1024 tokens.
UNIEVAL_MAX_LENGTH = 1024


class UniEval(ModelIndicator):
    """The UniEval dialogue columns `unieval_<aspect>`: P(Yes) / (P(Yes) + P(No)) of UniEval's Boolean question.

    Over-long inputs are truncated on the right (the end of the dialogue history, then of the response, is
    dropped) to 1024 tokens as in UniEval, or to `max_length`; a warning counts them.

    Args:
        model (`str`, *optional*, defaults to `"MingZhong/unieval-dialog"`): a UniEval-style T5 (Hub id or folder).
        aspects (`list[str]`, *optional*): which of `naturalness`, `coherence`, `understandability` to compute;
            all three by default.
        **kwargs: `revision`, `device`, `dtype`, `max_tokens`, `max_length`, `trust_remote_code` (see
            [`ModelIndicator`]) and `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import UniEval
    >>> UniEval(aspects=["coherence", "naturalness"]).columns
    ('unieval_naturalness', 'unieval_coherence')
    ```
    """

    name = "unieval"
    version = "1"
    default_model = "MingZhong/unieval-dialog"
    task = "seq2seq_lm"
    rule_options = (*ModelIndicator.rule_options, "aspects")

    def __init__(self, model: str | None = None, *, aspects: list[str] | tuple[str, ...] | None = None, **kwargs):
        super().__init__(model, **kwargs)
        chosen = list(ASPECTS) if aspects is None else [aspects] if isinstance(aspects, str) else list(aspects)
        unknown = [a for a in chosen if a not in ASPECTS]
        if unknown or not chosen:
            raise ValueError(f"Unknown UniEval aspect(s) {unknown or chosen}; choose from {list(ASPECTS)}.")
        # Canonical order, so that the same set of aspects always fingerprints the same.
        self.aspects = [a for a in ASPECTS if a in chosen]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"unieval_{a}" for a in self.aspects)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "aspects": list(self.aspects)}

    def context_length(self, model, tokenizer) -> int:
        # T5's relative positions have no hard limit; UniEval's own cap applies.
        return self.max_length or UNIEVAL_MAX_LENGTH

    def answer_ids(self, tokenizer) -> tuple[int, int]:
        """The token ids of "Yes" and "No" (the first token of each word, as UniEval reads them)."""
        yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in ("Yes", "No"))
        return yes, no

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        import torch

        model, tokenizer, device = self.load(rank)
        yes, no = self.answer_ids(tokenizer)
        limit = self.context_length(model, tokenizer)
        texts = [
            QUESTIONS[aspect].format(response=response, instruction=instruction)
            for aspect in self.aspects
            for instruction, response in zip(pairs.instructions, pairs.responses, strict=True)
        ]
        rows = encode_truncated(tokenizer, texts, limit, "UniEval inputs")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        start = model.config.decoder_start_token_id
        if start is None:
            start = pad_id

        def score(batch: list[int]) -> list[float]:
            ids, mask = pad([rows[i] for i in batch], pad_id, device)
            decoder_ids = torch.full((len(batch), 1), start, dtype=torch.long, device=device)
            with inference():
                logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits[:, 0]
            # P(Yes) / (P(Yes) + P(No)) of the softmax over the vocabulary = sigmoid of the logit difference.
            # Upcast before subtracting: two close bf16 logits would lose their difference.
            return torch.sigmoid(logits[:, yes].float() - logits[:, no].float()).tolist()

        values = run_in_batches(
            [len(r) for r in rows], self.token_budget(device), score, desc=model_pass(self.columns)
        )
        n = len(pairs)
        return {column: values[k * n : (k + 1) * n] for k, column in enumerate(self.columns)}
