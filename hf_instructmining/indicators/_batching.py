"""Batches built by token budget from length-sorted rows, padding, truncation, and results put back in order.

On a CPU, padding is pure waste: a batch costs (rows x its longest row) tokens of compute. Sorting rows by length
and filling each batch up to a token budget keeps padding small while giving the matrix multiplies more rows;
on a GPU the same budget keeps memory flat whatever the length mix.
"""

import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager


logger = logging.getLogger(__name__)


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Group row indices, longest first, into batches whose padded size (rows x longest) stays within `max_tokens`.

    A row longer than the budget gets a batch of its own. Longest first, so that an out-of-memory error, if any,
    comes on the first batch.

    Example:

    ```py
    >>> from hf_instructmining.indicators._batching import token_budget_batches
    >>> token_budget_batches([3, 10, 4, 9], max_tokens=20)
    [[1, 3], [2, 0]]
    ```
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(int(lengths[i]), 1)
        full = max_rows is not None and len(current) >= max_rows
        if current and (full or max(longest, size) * (len(current) + 1) > max_tokens):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return batches


def run_in_batches(
    lengths: Sequence[int],
    max_tokens: int,
    score: Callable[[list[int]], Sequence[float]],
    max_rows: int | None = None,
    desc: str = "Model pass",
) -> list[float]:
    """Call `score(batch_indices)` on token-budget batches and return the values in the input order.

    A progress bar moves per batch: a model pass over one `Dataset.map` batch can take minutes on a CPU, during which
    `map`'s own bar does not move. It counts padded tokens (rows x the batch's longest), what a batch costs, and shows
    the rows done beside them: the longest rows come first, so a bar counting rows read a few percent while much of
    the work was done, and its first time left was several times too long. It is a `datasets` bar, so
    `disable_progress_bars()` and `HF_DATASETS_DISABLE_PROGRESS_BARS=1` silence it, and it clears itself when the
    pass ends.
    """
    from datasets.utils.tqdm import tqdm

    values = [0.0] * len(lengths)
    batches = token_budget_batches(lengths, max_tokens, max_rows)
    costs = [len(batch) * max(max(int(lengths[i]), 1) for i in batch) for batch in batches]
    with tqdm(total=sum(costs), desc=desc, unit="tokens", leave=False, disable=len(batches) < 2) as progress:
        done = 0
        for batch, cost in zip(batches, costs, strict=True):
            for i, value in zip(batch, score(batch), strict=True):
                values[i] = float(value)
            done += len(batch)
            progress.set_postfix_str(f"{done}/{len(lengths)} rows", refresh=False)
            progress.update(cost)
    return values


def model_pass(columns: Sequence[str]) -> str:
    """The name of a model pass on its progress bar: the columns it computes, below `map`'s "Computing ..." bar,
    which moves only when a whole `map` batch is done."""
    return f"{', '.join(columns)}: model pass"


def pad(sequences: Sequence[Sequence[int]], pad_id: int, device: str):
    """Right-pad token id lists into `(input_ids, attention_mask)` tensors on `device`."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def truncate_pair(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """Fit `prompt + response` into `max_length` tokens; returns both parts and whether anything was cut.

    The response keeps its start and the prompt keeps its end (the text right before the response), each side
    giving up tokens only beyond half the budget when the other side needs them.
    """
    if len(prompt) + len(response) <= max_length:
        return prompt, response, False
    keep_response = min(len(response), max(max_length - len(prompt), max_length // 2))
    keep_prompt = max_length - keep_response
    return prompt[len(prompt) - keep_prompt :], response[:keep_response], True


def warn_truncated(count: int, total: int, what: str, max_length: int, how: str) -> None:
    """Log how many rows were truncated (once per call, never per row)."""
    if count:
        logger.warning(
            "%d of %d %s were longer than %d tokens and were truncated (%s).", count, total, what, max_length, how
        )


@contextmanager
def inference():
    """`torch.inference_mode` for the duration of a scoring call."""
    import torch

    with torch.inference_mode():
        yield


def encode_truncated(tokenizer, texts: list[str], limit: int, what: str) -> list[list[int]]:
    """Token ids of `texts` with special tokens; those over `limit` tokens lose their end (counted in a warning)."""
    rows = tokenizer(texts, verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(rows) if len(ids) > limit]
    if long:
        shorter = tokenizer([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]
        for i, ids in zip(long, shorter, strict=True):
            rows[i] = ids
    warn_truncated(len(long), len(rows), what, limit, "their end is dropped")
    return rows
