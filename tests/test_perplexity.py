"""`Perplexity`: the math against a per-example loop, chat templates vs plain text, batching invariance."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import Perplexity, get_indicator
from hf_instructmining.indicators.perplexity import _shared_prefix_length
from tests.fixtures.models import build_tiny_llama


ROWS = {
    "instruction": ["Give three tips for staying healthy.", "", "What is the capital of France?", "List colors"],
    "output": ["Eat well, sleep well and exercise.", "Bonjour.", "The capital of France is Paris.", "red"],
}


def naive_perplexities(indicator: Perplexity, path: str) -> list[float]:
    """The research-code loop: one example at a time, `model(ids, labels=labels)` with the instruction masked."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts, responses = indicator.encode(extract_pairs(ROWS), tokenizer)
    values = []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses, strict=True):
            ids = torch.tensor([prompt + response])
            labels = ids.clone()
            labels[0, : max(len(prompt), 1)] = -100
            values.append(math.exp(model(ids, labels=labels).loss.item()))
    return values


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_chat_llama_dir"])
def test_matches_the_per_example_loop(fixture, request):
    path = request.getfixturevalue(fixture)
    indicator = Perplexity(path)
    assert indicator(ROWS)["perplexity"] == pytest.approx(naive_perplexities(indicator, path), rel=1e-4)


def test_batching_does_not_change_values(tiny_llama_dir):
    one_by_one = Perplexity(tiny_llama_dir, max_tokens=1)(ROWS)["perplexity"]
    assert Perplexity(tiny_llama_dir, max_tokens=10_000)(ROWS)["perplexity"] == pytest.approx(one_by_one, rel=1e-5)


def test_plain_text_masks_exactly_the_instruction(tiny_llama_dir):
    indicator = Perplexity(tiny_llama_dir)
    tokenizer = indicator.load_tokenizer()
    prompts, responses = indicator.encode(extract_pairs(ROWS), tokenizer)
    assert [tokenizer.decode(r) for r in responses] == ROWS["output"]
    assert tokenizer.decode(prompts[0], skip_special_tokens=True) == ROWS["instruction"][0] + "\n\n"
    # This tokenizer adds no BOS: an empty instruction leaves the first response token as context only.
    assert prompts[1] == []
    assert math.isfinite(indicator(ROWS)["perplexity"][1])


def test_chat_template_puts_the_response_in_the_assistant_turn(tiny_chat_llama_dir):
    indicator = Perplexity(tiny_chat_llama_dir)
    tokenizer = indicator.load_tokenizer()
    prompts, responses = indicator.encode(extract_pairs(ROWS), tokenizer)
    assert tokenizer.decode(prompts[0]).endswith("<|assistant|>\n")
    assert tokenizer.decode(responses[0]) == ROWS["output"][0] + "</s>\n"


def test_template_is_recorded(tiny_llama_dir, tiny_chat_llama_dir):
    assert Perplexity(tiny_chat_llama_dir).metadata()["template"] == "chat"
    assert Perplexity(tiny_llama_dir).metadata()["template"] == "plain"
    assert Perplexity(tiny_chat_llama_dir, template="plain").metadata()["template"] == "plain"
    with pytest.raises(ValueError, match="no chat template"):
        Perplexity(tiny_llama_dir, template="chat")(ROWS)


def test_registry_and_options():
    indicator = get_indicator("perplexity", model="some/model", template="plain")
    assert isinstance(indicator, Perplexity) and indicator.spec()["template"] == "plain"
    assert Perplexity().model == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(ValueError, match="template"):
        Perplexity(template="jinja")


@pytest.mark.timeout(300)
def test_num_proc_workers_forked_after_torch_ran_in_the_parent(tiny_llama_dir):
    from datasets import Dataset

    indicator = Perplexity(tiny_llama_dir)
    expected = indicator(ROWS)["perplexity"]  # the parent has now run torch on CPU
    ds = Dataset.from_dict({key: values * 4 for key, values in ROWS.items()})
    parallel = ds.map(indicator, batched=True, batch_size=4, num_proc=2, with_rank=True)["perplexity"]
    assert list(parallel) == pytest.approx(expected * 4, rel=1e-5)


SYSTEM_TEMPLATE = (
    "<|system|>\nYou are a careful assistant. Answer the question that follows as well as you can.</s>\n"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_system_prompt_llama_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-system-llama"), chat_template=SYSTEM_TEMPLATE)


def test_a_prefix_shared_by_every_row_is_computed_once_with_the_same_values(tiny_system_prompt_llama_dir):
    indicator = Perplexity(tiny_system_prompt_llama_dir)
    tokenizer = indicator.load_tokenizer()
    prompts, _ = indicator.encode(extract_pairs(ROWS), tokenizer)
    shared = len(tokenizer("<|system|>\nYou are a careful assistant.")["input_ids"])
    assert _shared_prefix_length([(p, len(p)) for p in prompts]) >= shared  # the rows do share a long prefix
    naive = naive_perplexities(indicator, tiny_system_prompt_llama_dir)
    assert indicator(ROWS)["perplexity"] == pytest.approx(naive, rel=1e-4)
    # Alone, a row has nothing to share with; in small batches, every batch reuses the one prefix cache.
    assert [indicator({k: [v[i]] for k, v in ROWS.items()})["perplexity"][0] for i in range(4)] == pytest.approx(
        naive, rel=1e-4
    )
    assert Perplexity(tiny_system_prompt_llama_dir, max_tokens=1)(ROWS)["perplexity"] == pytest.approx(naive, rel=1e-4)


def test_the_token_budget_counts_the_shared_prefix(tiny_system_prompt_llama_dir):
    indicator = Perplexity(tiny_system_prompt_llama_dir, max_tokens=64)
    model, _, _ = indicator.load()
    seen = []

    def record(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        prefix = cache.get_seq_length() if cache is not None else 0
        seen.append((kwargs["input_ids"].shape[0], prefix + kwargs["input_ids"].shape[1]))

    handle = model.base_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        indicator(ROWS)
    finally:
        handle.remove()
    batches = seen[1:]  # the first call computes the prefix cache itself
    assert seen[0][0] == 1 and len(batches) > 1
    assert all(rows == 1 or rows * width <= 64 for rows, width in batches)
