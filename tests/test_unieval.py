"""`UniEval`: the Boolean-question score against UniEval's own computation, one model for three columns."""

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_instructmining.indicators import UniEval, get_indicator
from hf_instructmining.indicators.unieval import QUESTIONS


ROWS = {
    "instruction": ["Give three tips for staying healthy.", "Translate good morning into French."],
    "output": ["Eat well, sleep well and exercise.", "Bonjour."],
}


def unieval_reference(path: str, aspect: str) -> list[float]:
    """UniEval's scorer: labels "No", softmax at the first decoder step, P(Yes) / (P(Yes) + P(No)); batch 1."""
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    yes, no = tokenizer("Yes").input_ids[0], tokenizer("No").input_ids[0]
    values = []
    with torch.no_grad():
        for instruction, response in zip(ROWS["instruction"], ROWS["output"], strict=True):
            src = tokenizer(QUESTIONS[aspect].format(response=response, instruction=instruction), return_tensors="pt")
            labels = tokenizer(["No"], return_tensors="pt").input_ids
            probs = model(**src, labels=labels).logits[0, 0].softmax(-1)
            values.append((probs[yes] / (probs[yes] + probs[no])).item())
    return values


def test_matches_unieval_scorer(tiny_t5_dir):
    values = UniEval(tiny_t5_dir)(ROWS)
    assert list(values) == ["unieval_naturalness", "unieval_coherence", "unieval_understandability"]
    for aspect in ("naturalness", "coherence", "understandability"):
        assert values[f"unieval_{aspect}"] == pytest.approx(unieval_reference(tiny_t5_dir, aspect), rel=1e-4)


def test_only_coherence_reads_the_instruction(tiny_t5_dir):
    indicator = UniEval(tiny_t5_dir)
    other = indicator({**ROWS, "instruction": ["Write a haiku about the sea.", "List the primary colors."]})
    base = indicator(ROWS)
    assert other["unieval_naturalness"] == pytest.approx(base["unieval_naturalness"], rel=1e-5)
    assert other["unieval_coherence"] != pytest.approx(base["unieval_coherence"], rel=1e-5)


def test_one_column_by_name_and_shared_model(tiny_t5_dir):
    coherence = get_indicator("unieval_coherence", model=tiny_t5_dir)
    naturalness = get_indicator("unieval_naturalness", model=tiny_t5_dir)
    assert coherence.columns == ("unieval_coherence",)
    assert coherence(ROWS)["unieval_coherence"] == pytest.approx(UniEval(tiny_t5_dir)(ROWS)["unieval_coherence"])
    naturalness(ROWS)
    assert naturalness._model is coherence._model


def test_aspects_are_checked_and_ordered():
    assert UniEval(aspects=["understandability", "naturalness"]).aspects == ["naturalness", "understandability"]
    assert UniEval().model == "MingZhong/unieval-dialog"
    with pytest.raises(ValueError, match="Unknown UniEval aspect"):
        UniEval(aspects=["fluency"])
