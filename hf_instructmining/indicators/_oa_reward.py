"""Load OpenAssistant's GPT-NeoX reward checkpoints (e.g. `OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5`).

Stock `transformers` has no class for them: they were written by Open-Assistant's own `GPTNeoXRewardModel`
(`model_training/models/reward_model.py`), a `GPTNeoXModel` body named `gpt_neox` plus a linear head
`out_proj` (hidden -> 1) applied to the hidden state of the last non-padding token (`"pooling": "last"`) or to the
masked mean (`"pooling": "mean"`). Their `config.json` says `"model_type": "gpt_neox_reward_model"` and
`"architectures": ["GPTNeoXRewardModel"]`. This module rebuilds the same network from stock parts and maps the
checkpoint's weights by name, checking that every weight is used and none is missing, instead of running the
repository's code with `trust_remote_code`.
"""

import json
import logging
import re

import torch
from torch import nn

from ..loading import model_file


logger = logging.getLogger(__name__)

OA_MODEL_TYPE = "gpt_neox_reward_model"
OA_ARCHITECTURE = "GPTNeoXRewardModel"
# Buffers that older `transformers` saved with every GPT-NeoX layer; today they are rebuilt at init, not loaded.
_LEGACY_BUFFERS = re.compile(
    r"gpt_neox\.(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq)"
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class GPTNeoXRewardModel(nn.Module):
    """A GPT-NeoX body and a linear head pooled over the last (or mean) non-padding token: one score per text.

    Args:
        body (`GPTNeoXModel`): the transformer.
        head (`nn.Linear`): hidden size -> 1.
        pooling (`str`): `"last"` or `"mean"`.
    """

    def __init__(self, body: nn.Module, head: nn.Linear, pooling: str = "last"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"Unknown pooling `{pooling}` in the reward checkpoint; expected `last` or `mean`.")
        self.gpt_neox = body
        self.out_proj = head
        self.pooling = pooling
        self.config = body.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt_neox(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1)
        else:
            # Index of the last attended token, whichever side the padding is on.
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (attention_mask * (positions + 1)).argmax(1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.out_proj(pooled).squeeze(-1)


def _read_config(name_or_path: str, revision: str | None) -> dict | None:
    path = model_file(name_or_path, "config.json", revision)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_oa_reward_checkpoint(name_or_path: str, revision: str | None = None) -> bool:
    """Whether a model folder or Hub repo holds an OpenAssistant `GPTNeoXRewardModel` checkpoint."""
    config = _read_config(name_or_path, revision) or {}
    return config.get("model_type") == OA_MODEL_TYPE or OA_ARCHITECTURE in (config.get("architectures") or [])


def _read_state_dict(name_or_path: str, revision: str | None) -> dict[str, torch.Tensor]:
    for filename in _WEIGHT_FILES:
        path = model_file(name_or_path, filename, revision)
        if path is None:
            continue
        if filename.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            paths = [model_file(name_or_path, shard, revision) for shard in shards]
        else:
            paths = [path]
        state: dict[str, torch.Tensor] = {}
        for shard in paths:
            if shard is None:
                raise OSError(f"`{name_or_path}` lists a weight shard that cannot be found (index `{filename}`).")
            if shard.endswith(".safetensors"):
                from safetensors.torch import load_file

                state.update(load_file(shard))
            else:
                state.update(torch.load(shard, map_location="cpu", weights_only=True))
        return state
    raise OSError(f"`{name_or_path}` has no weights file (looked for {list(_WEIGHT_FILES)}).")


def load_oa_reward_model(name_or_path: str, revision: str | None, dtype: torch.dtype) -> GPTNeoXRewardModel:
    """Rebuild an OpenAssistant GPT-NeoX reward model from its checkpoint, every weight mapped and checked.

    Raises:
        `OSError`: weights are missing, or the checkpoint holds weights this layout does not use.
    """
    from transformers import GPTNeoXConfig, GPTNeoXModel

    raw = dict(_read_config(name_or_path, revision) or {})
    pooling = raw.pop("pooling", "last") or "last"
    for key in ("model_type", "architectures", "auto_map"):
        raw.pop(key, None)
    config = GPTNeoXConfig.from_dict(raw)
    state = _read_state_dict(name_or_path, revision)
    body_state = {k.removeprefix("gpt_neox."): v for k, v in state.items() if k.startswith("gpt_neox.")}
    head_state = {k.removeprefix("out_proj."): v for k, v in state.items() if k.startswith("out_proj.")}
    unused = sorted(k for k in state if not k.startswith(("gpt_neox.", "out_proj.")) or _LEGACY_BUFFERS.fullmatch(k))
    unexpected = [k for k in unused if not _LEGACY_BUFFERS.fullmatch(k)]
    for key in unused:
        body_state.pop(key.removeprefix("gpt_neox."), None)
    with torch.device("meta"):  # the key names only: no memory, no init
        expected = set(GPTNeoXModel(config).state_dict())
    missing = sorted(f"gpt_neox.{k}" for k in expected - set(body_state))
    missing += [f"out_proj.{k}" for k in ("weight", "bias") if k not in head_state]
    unexpected += sorted(f"gpt_neox.{k}" for k in set(body_state) - expected)
    unexpected += sorted(f"out_proj.{k}" for k in set(head_state) - {"weight", "bias"})
    if missing or unexpected:
        raise OSError(
            f"`{name_or_path}` is not a GPT-NeoX reward checkpoint in the OpenAssistant layout: "
            f"missing weights {missing[:10]}, unexpected weights {unexpected[:10]}."
        )
    body = GPTNeoXModel.from_pretrained(None, config=config, state_dict=body_state, dtype=dtype)
    weight = head_state["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0], dtype=dtype)
    head.load_state_dict(head_state)
    logger.info("Loaded %d body and %d head weights from %s", len(body_state), len(head_state), name_or_path)
    return GPTNeoXRewardModel(body, head, pooling)
