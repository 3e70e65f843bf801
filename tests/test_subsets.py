"""sample_subsets: seeded random mixtures of named sources, and plain random subsets of one pool."""

import datasets
import pytest

from hf_instructmining import sample_subsets


def _source(tag, n):
    return datasets.Dataset.from_dict({"instruction": [f"{tag} {i}" for i in range(n)], "output": [tag] * n})


def test_mixtures_have_the_size_composition_and_rows_they_claim():
    sources = {"a": _source("a", 30), "b": _source("b", 30), "c": _source("c", 5)}
    subsets = sample_subsets(sources, n_subsets=12, subset_size=20, seed=3)
    assert len({s.subset_id for s in subsets}) == 12
    for subset in subsets:
        assert len(subset.dataset) == 20 == sum(subset.composition.values())
        assert subset.composition["c"] <= 5
        assert sum(subset.ratios.values()) == pytest.approx(1.0, abs=1e-5)
        for name, count in subset.composition.items():
            rows = subset.dataset.filter(lambda r, name=name: r["source"] == name)
            assert len(rows) == count
            assert len(set(rows["row_index"])) == count  # without replacement
            assert all(
                sources[name][i]["instruction"] == r
                for i, r in zip(rows["row_index"], rows["instruction"], strict=True)
            )
    # random ratios give varied mixtures
    assert len({tuple(s.composition.values()) for s in subsets}) > 6


def test_seeded_and_prefix_stable():
    sources = {"a": _source("a", 40), "b": _source("b", 40)}
    first = sample_subsets(sources, n_subsets=4, subset_size=10, seed=7)
    again = sample_subsets(sources, n_subsets=6, subset_size=10, seed=7)
    other = sample_subsets(sources, n_subsets=4, subset_size=10, seed=8)
    assert [s.subset_id for s in first] == [s.subset_id for s in again[:4]]
    assert [s.dataset["instruction"] for s in first] == [s.dataset["instruction"] for s in again[:4]]
    assert [s.subset_id for s in first] != [s.subset_id for s in other]


def test_plain_random_subsets_of_one_pool():
    pool = _source("p", 50)
    subsets = sample_subsets(pool, n_subsets=3, subset_size=10, seed=0)
    assert all(s.composition == {"pool": 10} for s in subsets)
    assert subsets[0].dataset["row_index"] != subsets[1].dataset["row_index"]


def test_sources_in_different_layouts_become_instruction_pairs():
    chat = datasets.Dataset.from_dict(
        {
            "messages": [
                [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(8)
            ]
        }
    )
    subsets = sample_subsets({"alpaca": _source("x", 8), "chat": chat}, n_subsets=2, subset_size=8, seed=1)
    assert {"instruction", "output", "source", "row_index"} <= set(subsets[0].dataset.column_names)


def test_bad_arguments():
    with pytest.raises(ValueError, match="more than"):
        sample_subsets({"a": _source("a", 3)}, n_subsets=1, subset_size=5)
    with pytest.raises(ValueError, match="positive"):
        sample_subsets(_source("a", 3), n_subsets=0, subset_size=2)
    with pytest.raises(TypeError):
        sample_subsets([1, 2], n_subsets=1, subset_size=1)


def test_one_row_per_instruction_when_every_source_answers_the_same_instructions():
    instructions = [f"q{i}" for i in range(12)]
    sources = {
        m: datasets.Dataset.from_dict({"instruction": instructions, "output": [f"{m} {i}" for i in instructions]})
        for m in ("a", "b", "c")
    }
    mixed = sample_subsets(sources, n_subsets=8, subset_size=10, seed=2, concentration=0.3)
    assert any(len(set(s.dataset["instruction"])) < 10 for s in mixed)  # mixtures repeat instructions
    once = sample_subsets(sources, n_subsets=8, subset_size=10, seed=2, concentration=0.3, one_per="instruction")
    for subset in once:
        assert len(subset.dataset) == 10 == len(set(subset.dataset["instruction"]))
        assert sum(subset.composition.values()) == 10
        for source, i, output in zip(
            subset.dataset["source"], subset.dataset["row_index"], subset.dataset["output"], strict=True
        ):
            assert sources[source][i]["output"] == output
    # The purest source of a subset gives the most rows, as without `one_per`.
    assert all(max(s.composition, key=s.composition.get) == max(s.ratios, key=s.ratios.get) for s in once)
    again = sample_subsets(sources, n_subsets=8, subset_size=10, seed=2, concentration=0.3, one_per="instruction")
    assert [s.subset_id for s in once] == [s.subset_id for s in again]
    assert {s.subset_id for s in once}.isdisjoint(s.subset_id for s in mixed)


def test_one_per_refuses_a_missing_column_and_too_few_values():
    sources = {"a": _source("a", 5), "b": _source("a", 5)}  # the same five instructions twice
    with pytest.raises(ValueError, match="distinct values of `instruction`"):
        sample_subsets(sources, n_subsets=1, subset_size=6, one_per="instruction")
    with pytest.raises(ValueError, match="`one_per='topic'` names no column"):
        sample_subsets(sources, n_subsets=1, subset_size=4, one_per="topic")
    assert len(sample_subsets(sources, n_subsets=1, subset_size=5, one_per="instruction")[0]) == 5
