"""Selection: top-k, fraction and threshold on `instruct_score`, ties, NaN scores, duplicates, edge cases."""

import math

import pytest
from datasets import Dataset

from hf_instructmining import select_fraction, select_threshold, select_top_k


def _scored(scores, instructions=None, outputs=None):
    n = len(scores)
    return Dataset.from_dict(
        {
            "instruction": instructions or [f"q{i}" for i in range(n)],
            "output": outputs or [f"a{i}" for i in range(n)],
            "reward": [float(i) for i in range(n)],
            "instruct_score": scores,
        }
    )


def test_top_k_returns_the_k_lowest_scores_best_first():
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    selected = select_top_k(_scored(scores), 3)
    assert selected["instruct_score"] == [0.1, 0.2, 0.3]
    assert selected["row_index"] == [1, 5, 3]
    # every input column survives, scores included
    assert set(selected.column_names) == {"instruction", "output", "reward", "instruct_score", "row_index"}
    assert selected["instruction"] == ["q1", "q5", "q3"]


def test_top_100_of_300():
    scores = [((i * 37) % 300) / 300 for i in range(300)]
    selected = select_top_k(_scored(scores), 100)
    assert len(selected) == 100
    assert sorted(selected["instruct_score"]) == sorted(scores)[:100]
    assert max(selected["instruct_score"]) < min(s for i, s in enumerate(scores) if i not in selected["row_index"])


def test_ties_break_by_row_index_deterministically():
    ds = _scored([0.2, 0.1, 0.2, 0.1, 0.2])
    assert select_top_k(ds, 3)["row_index"] == [1, 3, 0]
    assert select_top_k(ds.shuffle(seed=0).flatten_indices(), 5)["instruct_score"] == [0.1, 0.1, 0.2, 0.2, 0.2]


def test_existing_row_index_is_kept():
    first = select_top_k(_scored([0.5, 0.1, 0.9, 0.3]), 3)  # rows 1, 3, 0
    second = select_top_k(first, 2)
    assert second["row_index"] == [1, 3]


def test_k_zero_and_k_larger_than_data(caplog):
    ds = _scored([0.3, 0.1, 0.2])
    # As the command line refuses `--top_k 0`: an empty selection is never what was meant.
    with pytest.raises(ValueError, match=r"^`k` must be a positive integer \(the number of rows to keep\), got `0`"):
        select_top_k(ds, 0)
    # Scoring an empty dataset adds no columns (map never runs): the error says it is empty, not "score it first".
    with pytest.raises(ValueError, match="is empty"):
        select_top_k(ds.select([]).remove_columns("instruct_score"), 3)
    with caplog.at_level("WARNING"):
        everything = select_top_k(ds, 10)
    assert everything["row_index"] == [1, 2, 0]
    assert "only 3 rows have a score" in caplog.text


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", True, None])
def test_bad_k(k):
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        select_top_k(_scored([0.1]), k)


def test_nan_scores_are_never_selected():
    ds = _scored([math.nan, 0.4, math.nan, 0.2, 0.3])
    assert select_top_k(ds, 10)["row_index"] == [3, 4, 1]
    assert select_fraction(ds, 1.0)["row_index"] == [3, 4, 1]
    assert select_threshold(ds, math.inf)["row_index"] == [3, 4, 1]
    assert len(select_top_k(_scored([math.nan, math.nan]), 1)) == 0


def test_fraction_bounds_and_rounding():
    ds = _scored([i / 100 for i in range(100)][::-1])
    assert len(select_fraction(ds, 1)) == 100
    assert len(select_fraction(ds, 0.29)) == 29
    assert select_fraction(ds, 0.05)["instruct_score"] == [0.0, 0.01, 0.02, 0.03, 0.04]
    assert len(select_fraction(_scored([0.1, 0.2, 0.3]), 0.5)) == 1  # rounded down
    for bad in (0, 0.0, -0.1, 1.01, math.nan, "half", True):
        with pytest.raises(ValueError, match=r"`fraction` must be a number in \(0, 1\]"):
            select_fraction(ds, bad)


def test_threshold_is_inclusive_and_best_first():
    ds = _scored([0.3, 0.1, 0.25, 0.2, 0.5])
    assert select_threshold(ds, 0.25)["instruct_score"] == [0.1, 0.2, 0.25]
    assert len(select_threshold(ds, 0.0)) == 0
    with pytest.raises(ValueError, match="`threshold` must be a number"):
        select_threshold(ds, math.nan)


def test_deduplicate_keeps_the_best_copy_of_each_exact_pair():
    ds = _scored(
        [0.5, 0.1, 0.3, 0.2, 0.4],
        instructions=["same", "same", "other", "same", "same"],
        outputs=["x", "x", "y", "x", "different"],
    )
    assert select_top_k(ds, 5)["row_index"] == [1, 3, 2, 4, 0]
    assert select_top_k(ds, 5, deduplicate=True)["row_index"] == [1, 2, 4]
    assert select_fraction(ds, 1.0, deduplicate=True)["row_index"] == [1, 2, 4]
    assert select_threshold(ds, 0.35, deduplicate=True)["row_index"] == [1, 2]


def test_deduplicate_on_chat_layout_with_a_custom_score_column():
    chat = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]] * 2
    ds = Dataset.from_dict(
        {
            "messages": chat + [[{"role": "user", "content": "yo"}, {"role": "assistant", "content": "hey"}]],
            "score": [0.2, 0.1, 0.3],
        }
    )
    assert select_top_k(ds, 3, score_column="score", deduplicate=True)["row_index"] == [1, 2]


def test_missing_score_column_and_wrong_input():
    ds = Dataset.from_dict({"instruction": ["a"], "output": ["b"]})
    with pytest.raises(ValueError, match="no `instruct_score` column"):
        select_top_k(ds, 1)
    with pytest.raises(TypeError, match="datasets.Dataset"):
        select_top_k({"instruct_score": [0.1]}, 1)


@pytest.mark.parametrize("on_invalid", ["raise", "nan"])
def test_invalid_rows_under_each_policy(on_invalid):
    from hf_instructmining import InstructScorer, QualityRule

    rule = QualityRule(1.0, {"output_length": -0.1}, {"output_length": {}})
    ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["one two three four", "", "one"]})
    scorer = InstructScorer(rule=rule, on_invalid=on_invalid)
    if on_invalid == "raise":
        with pytest.raises(ValueError, match="response"):
            ds.map(scorer, batched=True)
        return
    scored = ds.map(scorer, batched=True)
    assert math.isnan(scored["instruct_score"][1])
    assert select_top_k(scored, 3)["row_index"][:] == [0, 2]
    assert select_threshold(scored, math.inf)["row_index"][:] == [0, 2]


def test_example_data_scored_then_top_100_are_the_100_lowest():
    from datasets import load_dataset

    from hf_instructmining import QualityRule, compute_indicators
    from hf_instructmining.offline import example_data_path

    path = example_data_path()
    ds = load_dataset("json", data_files=str(path), split="train")
    rule = QualityRule(2.0, {"mtld": -0.01, "output_length": -0.001}, {"mtld": {}, "output_length": {}})
    scored = compute_indicators(ds, rule=rule, on_invalid="nan")
    selected = select_top_k(scored, 100)
    scores = [s for s in scored["instruct_score"][:] if not math.isnan(s)]
    assert len(selected) == 100 and selected["instruct_score"][:] == sorted(scores)[:100]
    assert set(selected.column_names) >= {*ds.column_names, "mtld", "output_length", "instruct_score", "row_index"}
    assert [scored[i]["instruct_score"] for i in selected["row_index"][:5]] == selected["instruct_score"][:5]
    deduplicated = select_top_k(scored, 100, deduplicate=True)
    pairs = list(zip(deduplicated["instruction"][:], deduplicated["input"][:], deduplicated["output"][:], strict=True))
    assert len(set(pairs)) == len(pairs) == 100
