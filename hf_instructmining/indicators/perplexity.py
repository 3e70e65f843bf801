"""The perplexity family: what one causal LM says about a response, from one model load and one batched pass.

- `perplexity` (InstructMining, arXiv 2307.06290, Sec. 3.1): exp of the mean negative log-likelihood (NLL) of the
  response tokens given the instruction, the instruction tokens masked out.
- `unconditional_perplexity`: the same without the instruction (an empty instruction in the same template). How
  fluent the response is on its own.
- `ifd`, instruction-following difficulty (Li et al. 2024, "From Quantity to Quality", Cherry LLM, Sec. 3.2; used
  again by Superfiltering, Li et al. 2024): `mean NLL(response | instruction) / mean NLL(response)`, the ratio of the
  two log-perplexities. Below 1, the instruction makes the response easier to predict: the two fit together, and the
  lower, the more the response is implied by the instruction. Near or above 1, the instruction does not help or even
  hurts: Cherry LLM keeps such "difficult" samples as the most informative, Superfiltering drops those above 1 as
  misaligned. Which way is better for training is an empirical question; a fitted rule's sign answers it for its
  own data (see `experiments/replication/RESULTS.md`).
- `end_of_turn_logprob`: the log-probability the model gives to ending the response where it ends: the end-of-turn
  token right after the response (the chat template's end marker, or the tokenizer's EOS token in plain text). A
  finished answer ends like one (near 0); a response that trails off or stops mid-sentence gets a low value.

The text the model reads is the tokenizer's chat template (the instruction's messages, then the response as the
assistant turn) when the tokenizer has one, and `instruction + "\\n\\n" + response` (plus the tokenizer's own
special tokens, such as BOS) otherwise; `metadata()` says which. With a chat template every token after the
instruction counts as response, end-of-turn tokens included, as they always have for `perplexity`.
Computing the two unconditional columns runs the response a second time (without the instruction) in the same
batches; the end-of-turn token costs nothing extra.
"""

import logging
import math
from typing import Any

from ..formats import InstructionPairs
from ._batching import model_pass, truncate_pair, warn_truncated
from ._lm_nll import ScoredRow, score_rows
from ._model_base import ModelIndicator, render_chat


logger = logging.getLogger(__name__)

TEMPLATES = ("auto", "chat", "plain")
PLAIN_SEPARATOR = "\n\n"
#: The columns one causal LM pass can write, in the order they are written.
OUTPUTS = ("perplexity", "unconditional_perplexity", "ifd", "end_of_turn_logprob")
_UNCONDITIONAL = ("unconditional_perplexity", "ifd")


class Perplexity(ModelIndicator):
    """The perplexity family of columns (see the module docstring): `perplexity` by default, and any of
    `unconditional_perplexity`, `ifd` and `end_of_turn_logprob` from the same model load and pass.

    Over-long examples are truncated to the model's context: the instruction loses its start and, past half the
    context, the response loses its end (its `end_of_turn_logprob` is then NaN); a warning counts them.

    Args:
        model (`str`, *optional*, defaults to `"meta-llama/Llama-2-7b-hf"`): any causal LM (Hub id or folder).
        template (`str`, *optional*, defaults to `"auto"`): `"chat"` (the tokenizer's chat template), `"plain"`
            (instruction, a blank line, response) or `"auto"` (chat when the tokenizer has a template).
        outputs (`list[str]`, *optional*, defaults to `["perplexity"]`): the columns to write, any of
            `perplexity`, `unconditional_perplexity`, `ifd`, `end_of_turn_logprob`.
        **kwargs: `revision`, `device`, `dtype`, `max_tokens`, `max_length`, `trust_remote_code` (see
            [`ModelIndicator`]) and `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import Perplexity
    >>> ppl = Perplexity(model="HuggingFaceTB/SmolLM2-135M-Instruct", outputs=["ifd", "perplexity"])
    >>> ppl.columns  # nothing loads until the first call
    ('perplexity', 'ifd')
    ```
    """

    name = "perplexity"
    # 2: a bf16 model's per-token losses are rounded to bf16 before they are averaged (float32 values are unchanged).
    version = "2"
    default_model = "meta-llama/Llama-2-7b-hf"
    task = "causal_lm"
    rule_options = (*ModelIndicator.rule_options, "template", "outputs")

    def __init__(
        self,
        model: str | None = None,
        *,
        template: str = "auto",
        outputs: list[str] | tuple[str, ...] | str | None = None,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if template not in TEMPLATES:
            raise ValueError(f"`template` must be one of {list(TEMPLATES)}, got `{template!r}`.")
        chosen = ["perplexity"] if outputs is None else [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = [o for o in chosen if o not in OUTPUTS]
        if unknown or not chosen:
            raise ValueError(f"Unknown perplexity output(s) {unknown or chosen}; choose from {list(OUTPUTS)}.")
        self.template = template
        # Canonical order, so that the same set of outputs always fingerprints the same.
        self.outputs = [o for o in OUTPUTS if o in chosen]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def spec(self) -> dict[str, Any]:
        spec = {**super().spec(), "template": self.template}
        # Rules written before the family had more columns record no `outputs`: keep those specs unchanged.
        return spec if self.outputs == ["perplexity"] else {**spec, "outputs": list(self.outputs)}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.outputs == ["perplexity"]:
            del state["outputs"]  # the fingerprint of a plain `Perplexity()` stays what it was: `map` caches hold
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"outputs": ["perplexity"], **state})

    def metadata(self) -> dict[str, Any]:
        """How the column was made (see [`ModelIndicator.metadata`]), with the resolved template (loads the tokenizer
        only)."""
        return {**super().metadata(), "template": self.resolved_template(self.load_tokenizer())}

    def resolved_template(self, tokenizer) -> str:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.template == "chat" and not has_template:
            raise ValueError(f"`template='chat'`, but the tokenizer of `{self.model}` has no chat template.")
        if self.template == "auto":
            return "chat" if has_template else "plain"
        return self.template

    def encode(
        self, pairs: InstructionPairs, tokenizer, *, conditional: bool = True
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of each row's instruction part and response part (before truncation); with
        `conditional=False`, the instruction part of an empty instruction."""
        prompt_ids, response_ids, _ = self._encode(pairs, tokenizer, conditional)
        return prompt_ids, response_ids

    def _encode(self, pairs: InstructionPairs, tokenizer, conditional: bool):
        """`(prompt ids, response ids, end-of-turn index)` per row; the index points into the response ids, and equals
        their length when the text has no end marker after the response (the EOS token is then appended to read it)."""
        if self.resolved_template(tokenizer) == "chat":
            conversations = pairs.prompts if conditional else [[{"role": "user", "content": ""}]] * len(pairs)
            prompts, responses = render_chat(tokenizer, conversations, pairs.responses)
            special = False
        else:
            instructions = pairs.instructions if conditional else [""] * len(pairs)
            prompts = [i + PLAIN_SEPARATOR if i else "" for i in instructions]
            responses, special = pairs.responses, True
        fulls = [p + r for p, r in zip(prompts, responses, strict=True)]
        encoded = tokenizer(fulls, add_special_tokens=special, return_offsets_mapping=True, verbose=False)
        prompt_ids, response_ids, ends = [], [], []
        for prompt, response, content, ids, offsets in zip(
            prompts, responses, pairs.responses, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            # The response starts at the first token that ends past the prompt's text (special tokens end at 0).
            split = next((t for t, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
            # The end of turn is the first token after the response's own text: one that starts where that text is
            # over, or a special token the tokenizer added (offsets (0, 0)), such as an EOS some tokenizers append.
            found = response.rfind(content)
            if found < 0:  # a template that trims the content
                content = content.strip()
                found = response.rfind(content)
            content_end = len(prompt) + max(found, 0) + len(content)
            end = next(
                (t for t in range(split + 1, len(ids)) if offsets[t][0] >= content_end or offsets[t] == (0, 0)),
                len(ids),
            )
            prompt_ids.append(ids[:split])
            response_ids.append(ids[split:])
            ends.append(end - split)
        return prompt_ids, response_ids, ends

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        model, tokenizer, device = self.load(rank)
        limit = self.context_length(model, tokenizer)
        want_end = "end_of_turn_logprob" in self.outputs
        rows, truncated = self._rows(pairs, tokenizer, limit, conditional=True, want_end=want_end)
        if any(o in self.outputs for o in _UNCONDITIONAL):
            extra, _ = self._rows(pairs, tokenizer, limit, conditional=False, want_end=False)
            rows += extra
        how = "instruction start, then response end" + ("; no end_of_turn_logprob without an end" if want_end else "")
        warn_truncated(truncated, len(pairs), "examples", limit, how)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        nll = score_rows(model, rows, pad_id, device, self.token_budget(device), desc=model_pass(self.columns))
        n = len(pairs)
        conditional, unconditional = nll.mean[:n], nll.mean[n:]
        values = {
            "perplexity": [math.exp(v) for v in conditional],
            "unconditional_perplexity": [math.exp(v) for v in unconditional],
            "ifd": [c / u if u > 0 else math.nan for c, u in zip(conditional, unconditional, strict=False)],
            "end_of_turn_logprob": [-v for v in nll.end_token[:n]],
        }
        return {column: values[column] for column in self.outputs}

    def _rows(self, pairs: InstructionPairs, tokenizer, limit: int, *, conditional: bool, want_end: bool):
        prompts, responses, ends = self._encode(pairs, tokenizer, conditional)
        eos = tokenizer.eos_token_id
        rows, truncated = [], 0
        for prompt, full_response, end in zip(prompts, responses, ends, strict=True):
            appended = want_end and end == len(full_response)  # no end marker in the text: read the EOS token
            if appended and eos is None:
                raise ValueError(
                    f"`end_of_turn_logprob` needs an end-of-turn token, but the tokenizer of `{self.model}` has "
                    "neither a chat template nor an EOS token."
                )
            prompt, response, cut = truncate_pair(prompt, full_response, limit - appended)
            truncated += cut
            ended = want_end and len(response) == len(full_response)  # a response that lost its end has no end token
            # Without a BOS token, an empty instruction leaves nothing to predict the first response token from.
            start = max(len(prompt), 1)
            ids = prompt + response + ([eos] if appended and ended else [])
            end_token = len(prompt) + end if ended else -1
            rows.append(ScoredRow(ids, start, len(prompt) + len(response), end_token))
        return rows, truncated
