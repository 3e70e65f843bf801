"""`reward`: a reward model's score of the (instruction, response) pair.

InstructMining (arXiv 2307.06290, Sec. 3.1) scores pairs with OpenAssistant's
`OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5`. Its checkpoint is a GPT-NeoX body plus a linear head that
stock `transformers` has no class for; it is rebuilt from stock parts with every weight mapped and checked
(see `_oa_reward.py`), never with `trust_remote_code`. Any `AutoModelForSequenceClassification` with one label
(e.g. `OpenAssistant/reward-model-deberta-v3-large-v2`) works too.

Prompt formats (`prompt_format="auto"` picks one per model family):

- `"oasst"`: `<|prompter|>{instruction}<|endoftext|><|assistant|>{response}<|endoftext|>`, the format
  OpenAssistant's reward models were trained on (chosen for their checkpoints, or when the tokenizer has
  `<|prompter|>`);
- `"chat"`: the tokenizer's chat template over the instruction's messages and the response (reward models that
  ship a template);
- `"pair"`: the tokenizer's text-pair encoding, `tokenizer(instruction, response)`, as in the model card of
  `OpenAssistant/reward-model-deberta-v3-large-v2` (everything else).
"""

from typing import Any

from ..formats import InstructionPairs
from ..loading import register_checkpoint_loader
from ._batching import inference, model_pass, pad, run_in_batches, truncate_pair, warn_truncated
from ._model_base import ModelIndicator, render_chat


PROMPT_FORMATS = ("auto", "oasst", "chat", "pair")


def _load_oa_checkpoint(name_or_path: str, revision: str | None, torch_dtype):
    """An OpenAssistant GPT-NeoX reward checkpoint rebuilt from stock parts, or `None` for any other checkpoint."""
    from ._oa_reward import is_oa_reward_checkpoint, load_oa_reward_model

    if not is_oa_reward_checkpoint(name_or_path, revision):
        return None
    return load_oa_reward_model(name_or_path, revision, torch_dtype)


register_checkpoint_loader("reward", _load_oa_checkpoint, fallback="sequence_classification")


class RewardScore(ModelIndicator):
    """The `reward` column: the reward model's scalar score of each (instruction, response) pair.

    Over-long pairs are truncated to the model's context: in the `oasst` and `chat` formats the instruction loses
    its start and, past half the context, the response loses its end; in the `pair` format the longer of the
    two loses its end (`longest_first`). A warning counts them.

    Args:
        model (`str`, *optional*, defaults to `"OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"`): an
            OpenAssistant GPT-NeoX reward checkpoint or any one-label sequence classifier.
        prompt_format (`str`, *optional*, defaults to `"auto"`): `"oasst"`, `"chat"`, `"pair"` or `"auto"`.
        **kwargs: `revision`, `device`, `dtype`, `max_tokens`, `max_length`, `trust_remote_code` (see
            [`ModelIndicator`]) and `format`, `column_mapping`, `on_invalid` (see [`Indicator`]).

    Example:

    ```py
    >>> from hf_instructmining.indicators import RewardScore
    >>> RewardScore(model="OpenAssistant/reward-model-deberta-v3-large-v2", prompt_format="pair").spec()
    {'model': 'OpenAssistant/reward-model-deberta-v3-large-v2', 'revision': None, 'prompt_format': 'pair'}
    ```
    """

    name = "reward"
    version = "1"
    default_model = "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"
    task = "reward"
    rule_options = (*ModelIndicator.rule_options, "prompt_format")

    def __init__(self, model: str | None = None, *, prompt_format: str = "auto", **kwargs):
        super().__init__(model, **kwargs)
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"`prompt_format` must be one of {list(PROMPT_FORMATS)}, got `{prompt_format!r}`.")
        self.prompt_format = prompt_format

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "prompt_format": self.prompt_format}

    def metadata(self) -> dict[str, Any]:
        """How the column was made (see [`ModelIndicator.metadata`]), with the resolved prompt format (loads the
        tokenizer only)."""
        return {**super().metadata(), "prompt_format": self.resolved_prompt_format(self.load_tokenizer())}

    def resolved_prompt_format(self, tokenizer) -> str:
        if self.prompt_format != "auto":
            return self.prompt_format
        # Imported here: the OpenAssistant loader needs torch, and building a scorer must not import it.
        from ._oa_reward import is_oa_reward_checkpoint

        if "<|prompter|>" in tokenizer.get_vocab() or is_oa_reward_checkpoint(self.model, self.revision):
            return "oasst"
        return "chat" if getattr(tokenizer, "chat_template", None) else "pair"

    def encode(self, pairs: InstructionPairs, tokenizer, limit: int) -> list[list[int]]:
        """Token ids of each row in the model's prompt format, truncated to `limit` tokens."""
        fmt = self.resolved_prompt_format(tokenizer)
        if fmt == "pair":
            encoded = tokenizer(pairs.instructions, pairs.responses, verbose=False)["input_ids"]
            long = [i for i, ids in enumerate(encoded) if len(ids) > limit]
            if long:
                shorter = tokenizer(
                    [pairs.instructions[i] for i in long],
                    [pairs.responses[i] for i in long],
                    truncation="longest_first",
                    max_length=limit,
                )["input_ids"]
                for i, ids in zip(long, shorter, strict=True):
                    encoded[i] = ids
            warn_truncated(len(long), len(encoded), "pairs", limit, "longest_first: the longer side loses its end")
            return encoded
        if fmt == "oasst":
            end = tokenizer.eos_token or "<|endoftext|>"
            prompts = [f"<|prompter|>{i}{end}<|assistant|>" for i in pairs.instructions]
            responses = [f"{r}{end}" for r in pairs.responses]
        else:
            prompts, responses = render_chat(tokenizer, pairs.prompts, pairs.responses)
        # Both formats split at special tokens, so encoding the two parts separately equals encoding the whole.
        prompt_ids = tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]
        response_ids = tokenizer(responses, add_special_tokens=False, verbose=False)["input_ids"]
        rows, truncated = [], 0
        for prompt, response in zip(prompt_ids, response_ids, strict=True):
            prompt, response, cut = truncate_pair(prompt, response, limit)
            truncated += cut
            rows.append(prompt + response)
        warn_truncated(truncated, len(rows), "pairs", limit, "instruction start, then response end")
        return rows

    def compute(self, pairs: InstructionPairs, rank: int | None = None) -> dict[str, list[float]]:
        model, tokenizer, device = self.load(rank)
        rows = self.encode(pairs, tokenizer, self.context_length(model, tokenizer))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def score(batch: list[int]) -> list[float]:
            ids, mask = pad([rows[i] for i in batch], pad_id, device)
            with inference():
                out = model(input_ids=ids, attention_mask=mask)
            logits = getattr(out, "logits", out)
            if logits.dim() == 2 and logits.shape[-1] != 1:
                raise ValueError(
                    f"`{self.model}` outputs {logits.shape[-1]} labels; a reward model outputs one score per text."
                )
            return logits.reshape(len(batch)).float().tolist()

        values = run_in_batches(
            [len(r) for r in rows], self.token_budget(device), score, desc=model_pass(self.columns)
        )
        return {self.name: values}
