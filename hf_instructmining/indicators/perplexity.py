"""`perplexity`: how surprising the response is to a causal language model, given the instruction.

InstructMining (arXiv 2307.06290, Sec. 3.1) uses the perplexity of the response conditioned on the instruction:
exp of the mean negative log-likelihood of the response tokens, with the instruction tokens masked out.

The text the model reads is the tokenizer's chat template (the instruction's messages, then the response as the
assistant turn) when the tokenizer has one, and `instruction + "\\n\\n" + response` (plus the tokenizer's own
special tokens, such as BOS) otherwise; `metadata()` says which. Every token after the instruction counts as
response, so with a chat template the end-of-turn tokens count too.

Speed: rows are length-sorted into token-budget batches (little padding), the body runs once per batch, and the
language-model head and the loss are computed only at the positions that predict response tokens. On a CPU the
body's matrix multiplies already run at the processor's peak one example at a time, so what remains to gain is
work not done: the head at instruction positions, and a token prefix that every row shares (a chat template's
system prompt, a fixed preamble), which is run once per call and reused from its key/value cache.
"""

import inspect
import logging
import math
from typing import Any

from ..formats import InstructionPairs
from ._batching import inference, pad, run_in_batches, truncate_pair, warn_truncated
from ._model_base import ModelIndicator, render_chat


logger = logging.getLogger(__name__)

TEMPLATES = ("auto", "chat", "plain")
PLAIN_SEPARATOR = "\n\n"
# Heads that do more than a linear map (soft-capping, scaling): score them with the full forward instead.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
# Positions whose logits are materialised at once (positions x vocabulary floats).
_HEAD_CHUNK = 2048
# A shared prefix shorter than this is recomputed with each row: reusing its cache costs a copy per batch and layer.
_MIN_SHARED_PREFIX = 8


class Perplexity(ModelIndicator):
    """The `perplexity` column: exp of the mean token NLL of the response given the instruction.

    Over-long examples are truncated to the model's context: the instruction loses its start and, past half the
    context, the response loses its end; a warning counts them.

    Args:
        model (`str`, *optional*, defaults to `"meta-llama/Llama-2-7b-hf"`): any causal LM (Hub id or folder).
        template (`str`, *optional*, defaults to `"auto"`): `"chat"` (the tokenizer's chat template), `"plain"`
            (instruction, a blank line, response) or `"auto"` (chat when the tokenizer has a template).
        **kwargs: `revision`, `device`, `dtype`, `max_tokens`, `max_length`, `trust_remote_code` (see
            [`ModelIndicator`]) and `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import Perplexity
    >>> ppl = Perplexity(model="HuggingFaceTB/SmolLM2-135M-Instruct")  # nothing loads until the first call
    >>> ppl.spec()
    {'model': 'HuggingFaceTB/SmolLM2-135M-Instruct', 'revision': None, 'template': 'auto'}
    ```
    """

    name = "perplexity"
    version = "1"
    default_model = "meta-llama/Llama-2-7b-hf"
    task = "causal_lm"

    def __init__(self, model: str | None = None, *, template: str = "auto", **kwargs):
        super().__init__(model, **kwargs)
        if template not in TEMPLATES:
            raise ValueError(f"`template` must be one of {list(TEMPLATES)}, got `{template!r}`.")
        self.template = template

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "template": self.template}

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

    def encode(self, pairs: InstructionPairs, tokenizer) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of each row's instruction part and response part (before truncation)."""
        if self.resolved_template(tokenizer) == "chat":
            prompts, responses = render_chat(tokenizer, pairs.prompts, pairs.responses)
            special = False
        else:
            prompts = [i + PLAIN_SEPARATOR if i else "" for i in pairs.instructions]
            responses, special = pairs.responses, True
        fulls = [p + r for p, r in zip(prompts, responses, strict=True)]
        encoded = tokenizer(fulls, add_special_tokens=special, return_offsets_mapping=True, verbose=False)
        prompt_ids, response_ids = [], []
        for prompt, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            # The response starts at the first token that ends past the prompt's text (special tokens end at 0).
            split = next((t for t, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
            prompt_ids.append(ids[:split])
            response_ids.append(ids[split:])
        return prompt_ids, response_ids

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        import torch

        model, tokenizer, device = self.load(rank)
        prompts, responses = self.encode(pairs, tokenizer)
        limit = self.context_length(model, tokenizer)
        rows, truncated = [], 0
        for prompt, response in zip(prompts, responses, strict=True):
            prompt, response, cut = truncate_pair(prompt, response, limit)
            truncated += cut
            # Without a BOS token, an empty instruction leaves nothing to predict the first response token from.
            start = max(len(prompt), 1)
            rows.append((prompt + response, start))
        warn_truncated(truncated, len(rows), "examples", limit, "instruction start, then response end")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        fast = not any(getattr(model.config, name, None) for name in _LOGIT_TRANSFORMS)
        shared = _shared_prefix_length(rows)
        cache_kwarg = _cache_kwarg(model.base_model) if shared else None
        prefix_cache = _prefix_cache(model, rows[0][0][:shared], device, cache_kwarg) if shared else None

        def score(batch: list[int]) -> list[float]:
            # Rows without the shared prefix (its keys and values come from `prefix_cache`); positions count from it.
            ids, mask = pad([rows[i][0][shared:] for i in batch], pad_id, device)
            starts = torch.tensor([rows[i][1] - shared for i in batch], device=device)
            lengths = mask.sum(1)
            # (row, position) of every position that predicts a response token: start - 1 .. length - 2.
            positions = torch.arange(ids.shape[1], device=device)
            wanted = (positions >= starts[:, None] - 1) & (positions < lengths[:, None] - 1)
            row_idx, pos_idx = wanted.nonzero(as_tuple=True)
            targets = ids[row_idx, pos_idx + 1]
            inputs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
            if prefix_cache is not None:
                inputs["attention_mask"] = torch.cat([mask.new_ones(len(batch), shared), mask], dim=1)
                inputs.update({cache_kwarg: _repeat_cache(prefix_cache, len(batch)), "use_cache": True})
            with inference():
                if fast:
                    hidden = model.base_model(**inputs).last_hidden_state
                    nll = _token_nll(hidden[row_idx, pos_idx], targets, model.get_output_embeddings())
                else:
                    logits = model(**inputs).logits
                    nll = _token_nll(logits[row_idx, pos_idx], targets, None)
                totals = torch.zeros(len(batch), dtype=torch.float64, device=device)
                totals.index_add_(0, row_idx, nll.double())
                counts = torch.bincount(row_idx, minlength=len(batch))
            return [math.exp(v) for v in (totals / counts).tolist()]

        # The budget counts the shared prefix too: every row of a batch holds its own copy of the prefix's keys and
        # values and attends over them, so a budget on the suffixes alone would grow batches past the memory it sets.
        lengths = [len(r[0]) for r in rows]
        return {self.name: run_in_batches(lengths, self.token_budget(device), score)}


def _token_nll(states, targets, head):
    """Per-token NLL of `targets`, applying the LM `head` (if any) to a chunk of positions at a time."""
    import torch

    losses = []
    for start in range(0, len(states), _HEAD_CHUNK):
        chunk = states[start : start + _HEAD_CHUNK]
        logits = (head(chunk) if head is not None else chunk).float()
        losses.append(
            torch.nn.functional.cross_entropy(logits, targets[start : start + _HEAD_CHUNK], reduction="none")
        )
    return torch.cat(losses) if losses else states.new_zeros(0, dtype=torch.float32)


def _shared_prefix_length(rows: list[tuple[list[int], int]]) -> int:
    """Tokens at the start of every row that can be computed once: common to all rows, and short of every row's
    first predicting position (`start - 1`), so each row still has all its scored positions after the prefix."""
    if len(rows) < 2:
        return 0
    first = rows[0][0]
    shared = min(len(first), min(start for _, start in rows) - 1)
    for ids, _ in rows[1:]:
        shared = next((t for t in range(shared) if ids[t] != first[t]), shared)
        if shared < _MIN_SHARED_PREFIX:
            return 0
    return shared


def _cache_kwarg(module) -> str:
    """The name under which `module.forward` takes and returns the key/value cache: transformers 5.24 renamed
    `past_key_values` to `cache` (the old name warns, and goes in 5.40); earlier releases know only the old one."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _prefix_cache(model, prefix: list[int], device, cache_kwarg: str):
    """The key/value cache of `prefix` (batch of one), computed once per call."""
    import torch

    with inference():
        ids = torch.tensor([prefix], device=device)
        outputs = model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        return outputs[cache_kwarg]


def _repeat_cache(cache, rows: int):
    """A fresh copy of the one-row `cache` for a batch of `rows`: the forward pass appends to the cache it gets."""
    import copy

    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(rows)
    return batch_cache
