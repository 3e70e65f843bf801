"""Token log-likelihoods of response spans under a causal LM, batched: the one pass behind the perplexity family.

Each row is a token sequence with a span of response tokens to average over and, optionally, one more token whose
own log-probability is read (the end-of-turn token after the response). Rows are length-sorted into token-budget
batches, the body runs once per batch, and the language-model head and the loss are computed only at the positions
that predict scored tokens. A token prefix that every row shares (a chat template's system prompt) is run once per
call and reused from its key/value cache. The loss is torch's cross-entropy over the logits in the model's dtype: its
log-softmax runs in float32 inside the kernel on every dtype; a bf16 model's per-token losses come out rounded to bf16
(about 0.4% of each value), which left the offline rule's Spearman figures against float32 over 1,000 real rows
unchanged to five decimals, where upcasting the logits to float32 first made its whole scoring 1.13x slower on an
AMX-BF16 CPU (benchmarks/RESULTS.md).
"""

import inspect
import math
from dataclasses import dataclass

from ._batching import inference, pad, run_in_batches


# Heads that do more than a linear map (soft-capping, scaling): score them with the full forward instead.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
# Logits materialised at once, in bytes: on a CPU, 256 positions of SmolLM2's 49,152-token vocabulary ran the head and
# a bf16 loss in 32 ms where 2,048 at once took 61 (memory traffic). 32 MiB is 341 such positions in bf16.
_HEAD_CHUNK_BYTES = 32 * 2**20
# A shared prefix shorter than this is recomputed with each row: reusing its cache costs a copy per batch and layer.
_MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class ScoredRow:
    """A token sequence and what to read from it.

    Args:
        ids (`list[int]`): the tokens the model reads.
        start (`int`): the first token of the span to average over (at least 1: token 0 has no context).
        end (`int`): one past the span's last token.
        end_token (`int`, *optional*, defaults to `-1`): a token whose log-probability is read on its own, or -1.
    """

    ids: list[int]
    start: int
    end: int
    end_token: int = -1


@dataclass
class RowNLL:
    """Per row: the mean NLL of the span (`nan` when empty) and the NLL of `end_token` (`nan` when there is none)."""

    mean: list[float]
    end_token: list[float]


def score_rows(
    model, rows: list[ScoredRow], pad_id: int, device: str, max_tokens: int, desc: str = "Model pass"
) -> RowNLL:
    """Mean NLL over each row's span and the NLL of its end token, in the rows' order (see the module docstring);
    `desc` names the pass on its progress bar."""
    import torch

    fast = not any(getattr(model.config, name, None) for name in _LOGIT_TRANSFORMS)
    shared = shared_prefix_length(rows)
    cache_kwarg = _cache_kwarg(model.base_model) if shared else None
    prefix_cache = _prefix_cache(model, rows[0].ids[:shared], device, cache_kwarg) if shared else None
    result = RowNLL([math.nan] * len(rows), [math.nan] * len(rows))

    def score(batch: list[int]) -> list[float]:
        # Rows without the shared prefix (its keys and values come from `prefix_cache`); positions count from it.
        ids, mask = pad([rows[i].ids[shared:] for i in batch], pad_id, device)
        starts, ends, end_tokens = (
            torch.tensor([getattr(rows[i], name) - shared for i in batch], device=device)
            for name in ("start", "end", "end_token")
        )
        # (row, position) of every position that predicts a scored token: position p predicts token p + 1.
        tokens = torch.arange(1, ids.shape[1] + 1, device=device)
        in_span = (tokens >= starts[:, None]) & (tokens < ends[:, None])
        is_end = (tokens == end_tokens[:, None]) & (end_tokens[:, None] >= 0)
        row_idx, pos_idx = (in_span | is_end).nonzero(as_tuple=True)
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
            span = in_span[row_idx, pos_idx]
            totals = torch.zeros(len(batch), dtype=torch.float64, device=device)
            totals.index_add_(0, row_idx[span], nll[span].double())
            counts = torch.bincount(row_idx[span], minlength=len(batch))
            ending = is_end[row_idx, pos_idx]
        for k, i in enumerate(batch):
            result.mean[i] = totals[k].item() / counts[k].item() if counts[k] else math.nan
        for k, value in zip(row_idx[ending].tolist(), nll[ending].tolist(), strict=True):
            result.end_token[batch[k]] = value
        return [0.0] * len(batch)

    # The budget counts the shared prefix too: every row of a batch holds its own copy of the prefix's keys and
    # values and attends over them, so a budget on the suffixes alone would grow batches past the memory it sets.
    run_in_batches([len(r.ids) for r in rows], max_tokens, score, desc=desc)
    return result


def _token_nll(states, targets, head):
    """Per-token NLL of `targets` in float32, applying the LM `head` (if any) to a chunk of positions at a time."""
    import torch

    if not len(states):
        return states.new_zeros(0, dtype=torch.float32)
    vocabulary = head.weight.shape[0] if head is not None else states.shape[-1]
    chunk = max(1, _HEAD_CHUNK_BYTES // (vocabulary * states.element_size()))
    losses = []
    for start in range(0, len(states), chunk):
        logits = states[start : start + chunk]
        if head is not None:
            logits = head(logits)
        loss = torch.nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="none")
        losses.append(loss.float())
    return torch.cat(losses)


def shared_prefix_length(rows: list[ScoredRow]) -> int:
    """Tokens at the start of every row that can be computed once: common to all rows, and short of every row's
    first predicting position (`start - 1`), so each row still has all its scored positions after the prefix."""
    if len(rows) < 2:
        return 0
    first = rows[0].ids
    firsts = [min(r.start, r.end_token if r.end_token >= 0 else r.start) for r in rows]
    shared = min(len(first), min(firsts) - 1)
    for row in rows[1:]:
        shared = next((t for t in range(shared) if row.ids[t] != first[t]), shared)
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
