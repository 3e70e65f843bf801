"""`Perplexity`: the math against a per-example loop, chat templates vs plain text, batching invariance."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import Perplexity, get_indicator
from hf_instructmining.indicators._lm_nll import ScoredRow, shared_prefix_length
from hf_instructmining.indicators.perplexity import OUTPUTS
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
    assert (
        shared_prefix_length([ScoredRow(p, len(p), len(p)) for p in prompts]) >= shared
    )  # the rows do share a long prefix
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


def _log_probs(path: str, ids: list[int]) -> torch.Tensor:
    """Hand computation: log-probabilities of every next token, from one plain forward pass."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def _mean_nll(log_probs: torch.Tensor, ids: list[int], start: int, end: int) -> float:
    return -sum(log_probs[t - 1, ids[t]].item() for t in range(start, end)) / (end - start)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_chat_llama_dir", "tiny_system_prompt_llama_dir"])
def test_the_family_matches_hand_computations(fixture, request):
    path = request.getfixturevalue(fixture)
    indicator = Perplexity(path, outputs=list(OUTPUTS))
    assert indicator.columns == OUTPUTS
    values = indicator(ROWS)
    tokenizer = indicator.load_tokenizer()
    pairs = extract_pairs(ROWS)
    prompts, responses = indicator.encode(pairs, tokenizer)
    empty_prompts, empty_responses = indicator.encode(pairs, tokenizer, conditional=False)
    chat = fixture != "tiny_llama_dir"
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        # The end of turn: `</s>` right after the content in the chat templates; plain text appends the EOS token.
        end = [t for t, token in enumerate(response) if token == tokenizer.eos_token_id][0] if chat else len(response)
        ids = prompt + response + ([] if chat else [tokenizer.eos_token_id])
        log_probs = _log_probs(path, ids)
        start = max(len(prompt), 1)
        conditional = _mean_nll(log_probs, ids, start, len(prompt) + len(response))
        uncond_ids = empty_prompts[i] + empty_responses[i]
        unconditional = _mean_nll(
            _log_probs(path, uncond_ids), uncond_ids, max(len(empty_prompts[i]), 1), len(uncond_ids)
        )
        assert empty_responses[i] == response or not chat  # the same response tokens, without the instruction
        assert values["perplexity"][i] == pytest.approx(math.exp(conditional), rel=1e-4)
        assert values["unconditional_perplexity"][i] == pytest.approx(math.exp(unconditional), rel=1e-4)
        assert values["ifd"][i] == pytest.approx(conditional / unconditional, rel=1e-4)
        eos_position = len(prompt) + end
        assert ids[eos_position] == tokenizer.eos_token_id
        assert values["end_of_turn_logprob"][i] == pytest.approx(
            log_probs[eos_position - 1, ids[eos_position]].item(), abs=1e-4
        )
    # The extra columns do not change `perplexity` itself.
    assert values["perplexity"] == pytest.approx(Perplexity(path)(ROWS)["perplexity"], rel=1e-5)


def test_a_response_cut_by_the_context_has_no_end_of_turn(tiny_llama_dir, caplog):
    rows = {"instruction": ["Say it"], "output": ["word " * 40]}
    with caplog.at_level("WARNING"):
        value = Perplexity(tiny_llama_dir, max_length=16, outputs=["end_of_turn_logprob"])(rows)
    assert math.isnan(value["end_of_turn_logprob"][0])
    assert "no end_of_turn_logprob" in caplog.text


def test_the_family_is_one_indicator_and_one_pass_when_scored_together(tiny_chat_llama_dir):
    from datasets import Dataset
    from datasets.fingerprint import Hasher

    from hf_instructmining import ScoreConfig
    from hf_instructmining.scoring.plan import plan_indicators

    specs = {c: {"model": tiny_chat_llama_dir} for c in ("perplexity", "ifd", "end_of_turn_logprob")}
    specs["mtld"] = {}
    planned = plan_indicators(specs, ScoreConfig())
    lm = [i for i in planned if isinstance(i, Perplexity)]
    assert len(lm) == 1 and lm[0].columns == ("perplexity", "ifd", "end_of_turn_logprob")
    # Each column also stands alone, from its registry name, as a `map` function.
    ds = Dataset.from_dict(ROWS).map(get_indicator("ifd", model=tiny_chat_llama_dir), batched=True)
    assert ds["ifd"] == pytest.approx(lm[0](ROWS)["ifd"], rel=1e-5)
    assert get_indicator("ifd", **lm[0].spec()).columns == lm[0].columns  # the spec rebuilds it
    # A plain `Perplexity` keeps the spec and fingerprint it always had; another set of outputs changes both.
    assert "outputs" not in Perplexity(tiny_chat_llama_dir).spec()
    assert Hasher.hash(Perplexity(tiny_chat_llama_dir)) != Hasher.hash(Perplexity(tiny_chat_llama_dir, outputs="ifd"))
    with pytest.raises(ValueError, match="perplexity output"):
        Perplexity(outputs=["ppl"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_head_runs_in_chunks_of_bounded_bytes_with_the_same_losses(monkeypatch, dtype):
    from hf_instructmining.indicators import _lm_nll

    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 1000, bias=False).to(dtype)
    states = torch.randn(50, 16, generator=generator).to(dtype)
    targets = torch.randint(0, 1000, (50,), generator=generator)
    whole = _lm_nll._token_nll(states, targets, head)
    sizes = []
    monkeypatch.setattr(_lm_nll, "_HEAD_CHUNK_BYTES", 7 * 1000 * states.element_size())
    head.register_forward_hook(lambda module, args, out: sizes.append(len(out)))
    chunked = _lm_nll._token_nll(states, targets, head)
    assert sizes == [7] * 7 + [1] and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, whole)
    # In bf16 the loss comes out of the kernel rounded to bf16: within bf16's relative precision of float32's.
    exact = torch.nn.functional.cross_entropy(head.float()(states.float()), targets, reduction="none")
    assert ((chunked - exact).abs() / exact).max() < (0.01 if dtype == torch.bfloat16 else 1e-5)
