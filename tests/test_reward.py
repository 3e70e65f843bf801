"""`RewardScore`: OpenAssistant GPT-NeoX checkpoints rebuilt from stock parts, and sequence classifiers."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPTNeoXConfig, GPTNeoXModel

from hf_instructmining.indicators import RewardScore, get_indicator


ROWS = {
    "instruction": ["Give three tips for staying healthy.", "Translate good morning into French.", "Hi"],
    "output": ["Eat well, sleep well and exercise.", "Bonjour.", "Hello there, how can I help you today?"],
}


def oa_reference(path) -> list[float]:
    """OpenAssistant's `GPTNeoXRewardModel.forward`, written out: body, last token, `out_proj`; one text at a time."""
    raw = json.loads((path / "config.json").read_text())
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    config = GPTNeoXConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "architectures", "pooling")})
    body = GPTNeoXModel(config).eval()
    body.load_state_dict(
        {k[len("gpt_neox.") :]: v for k, v in state.items() if k.startswith("gpt_neox.")}, strict=False
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    values = []
    with torch.no_grad():
        for instruction, response in zip(ROWS["instruction"], ROWS["output"], strict=True):
            text = f"<|prompter|>{instruction}<|endoftext|><|assistant|>{response}<|endoftext|>"
            hidden = body(**tokenizer(text, return_tensors="pt")).last_hidden_state[0, -1]
            values.append((hidden @ state["out_proj.weight"].T + state["out_proj.bias"]).item())
    return values


def test_oa_checkpoint_matches_its_own_forward(tiny_oa_reward_dir):
    from pathlib import Path

    indicator = RewardScore(tiny_oa_reward_dir)
    assert indicator.metadata()["prompt_format"] == "oasst"
    assert indicator(ROWS)["reward"] == pytest.approx(oa_reference(Path(tiny_oa_reward_dir)), rel=1e-4, abs=1e-6)


def test_classifier_matches_the_per_example_loop(tiny_classifier_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    with torch.no_grad():
        expected = [
            model(**tokenizer(i, o, return_tensors="pt")).logits[0, 0].item()
            for i, o in zip(ROWS["instruction"], ROWS["output"], strict=True)
        ]
    indicator = RewardScore(tiny_classifier_dir)
    assert indicator.metadata()["prompt_format"] == "pair"
    assert indicator(ROWS)["reward"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_oa_format_on_a_classifier_with_the_oa_tokens(tiny_classifier_dir):
    values = RewardScore(tiny_classifier_dir, prompt_format="oasst")(ROWS)["reward"]
    assert len(values) == 3


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_checkpoint_weights_are_checked(tiny_oa_reward_dir, tmp_path, change):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_oa_reward_dir, broken)
    state = torch.load(broken / "pytorch_model.bin", weights_only=True)
    if change == "missing":
        del state["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"]
    else:
        state["value_head.weight"] = torch.zeros(1, 16)
    torch.save(state, broken / "pytorch_model.bin")
    with pytest.raises(OSError, match=f"{change} weights \\[.*(dense_4h_to_h|value_head)"):
        RewardScore(str(broken))(ROWS)


def test_registry_and_options():
    indicator = get_indicator("reward")
    assert indicator.model == "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"
    assert indicator.trust_remote_code is False
    with pytest.raises(ValueError, match="prompt_format"):
        RewardScore(prompt_format="alpaca")
