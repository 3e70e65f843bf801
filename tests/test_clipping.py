"""Clipping made visible: how many rows of each indicator a rule clipped into its range, and which terms rank nothing,
in the scoring warning, `summarize_dataset`, dataset cards and their pictures."""

import warnings

import numpy as np
import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard

from hf_instructmining import QualityRule, compute_indicators, save_scored
from hf_instructmining.hub.cards import build_dataset_card, picture_columns
from hf_instructmining.rules.clipping import ClipCount, clip_counts
from hf_instructmining.rules.rule import describe_outside_domain
from hf_instructmining.scoring import summarize_dataset


# `knn_6` above the range on every row (as on real answers far from the fitting pool), `mtld` on some rows only.
RULE = QualityRule(
    0.5,
    {"mtld": -0.01, "knn_6": 0.15},
    {"mtld": {}, "knn_6": {}},
    domain={"mtld": (20.0, 60.0), "knn_6": (0.48, 0.6)},
    name="ranged",
)
ROWS = {
    "mtld": [10.0, 30.0, 50.0, 70.0, 90.0, 40.0],
    "knn_6": [1.1, 1.3, 0.9, 1.2, 1.0, 1.4],
    "generator": ["a", "a", "a", "b", "b", "b"],
}


def scored_rows() -> Dataset:
    ds = Dataset.from_dict({"instruction": [f"q{i}" for i in range(6)], "output": [f"a{i}" for i in range(6)], **ROWS})
    return ds.add_column("instruct_score", RULE.predict(ds).tolist())


def test_clip_counts_say_which_rows_were_clipped_and_which_terms_rank_nothing():
    counts = clip_counts(RULE, ROWS)
    assert counts["mtld"] == ClipCount(6, 1, 2, 20.0, 60.0)
    assert counts["knn_6"].above == 6 and counts["knn_6"].ranks_nothing and not counts["mtld"].ranks_nothing
    assert counts["knn_6"].describe() == "all 6 rows above the range: a constant, it ranks nothing"
    assert counts["mtld"].describe() == "3 of 6 rows (1 below, 2 above the range)"
    # NaN values (invalid rows) are neither counted nor clipped
    assert clip_counts(RULE, {"mtld": [np.nan, 70.0], "knn_6": [np.nan, 0.5]})["mtld"] == ClipCount(
        1, 0, 1, 60.0, 60.0
    )


def test_the_domain_sentence_counts_clipped_rows_and_says_ranks_nothing():
    text = describe_outside_domain(RULE, ROWS)
    assert "`knn_6` 1.15 (fitted 0.48 to 0.6) lies outside" in text
    assert "`knn_6` on all 6 rows above the range: a constant, it ranks nothing" in text
    assert "`mtld` on 3 of 6 rows (1 below, 2 above the range)" in text
    assert "barely" not in text
    # means inside the range: single rows outside it are normal, and the counts say how many (summaries, cards)
    assert describe_outside_domain(RULE, {"mtld": [10.0, 70.0], "knn_6": [0.5, 0.55]}) is None


def test_scoring_warns_with_the_counts(tmp_path):
    rule = QualityRule(1.0, {"output_length": 0.01}, {"output_length": {}}, domain={"output_length": (50.0, 80.0)})
    ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["x y", "x y z", "x"]})
    with pytest.warns(
        UserWarning, match=r"`output_length` on all 3 rows below the range: a constant, it ranks nothing"
    ):
        compute_indicators(ds, rule=rule)


def test_summarize_dataset_counts_clipped_values_overall_and_per_group():
    summary = summarize_dataset(ROWS, RULE, group_by="generator")
    assert summary.clipped["knn_6"].above == 6 and summary.clipped["mtld"].clipped == 3
    assert summary.to_dict()["clipped"]["knn_6"] == {"n": 6, "below": 0, "above": 6, "ranks_nothing": True}
    assert list(summary.groups) == ["a", "b"]
    a, b = summary.groups["a"], summary.groups["b"]
    assert (a.num_rows, b.num_rows) == (3, 3)
    assert (a.clipped["mtld"].below, a.clipped["mtld"].above, b.clipped["mtld"].above) == (1, 0, 2)
    assert a.means["mtld"] == pytest.approx(30.0)
    assert summary.to_dict()["groups"]["b"]["clipped"]["mtld"]["above"] == 2
    # counts merge: two halves summarised apart give the whole
    halves = [{k: v[:3] for k, v in ROWS.items()}, {k: v[3:] for k, v in ROWS.items()}]
    merged = summarize_dataset(halves[0], RULE).merge(summarize_dataset(halves[1], RULE))
    assert merged.clipped == summary.clipped
    # a scored Dataset, with its score column, gives the mean score per group
    scored = summarize_dataset(scored_rows(), RULE, group_by="generator")
    assert scored.groups["b"].stats["instruct_score"].mean == pytest.approx(np.mean(RULE.predict(ROWS)[3:]))
    with pytest.raises(ValueError, match="no column `model` to group by"):
        summarize_dataset(ROWS, RULE, group_by="model")


def test_the_card_counts_clipped_rows_and_draws_what_the_score_used(tmp_path):
    scored = scored_rows()
    card = build_dataset_card(scored, rule=RULE)
    assert "| `knn_6` | 0.48 to 0.6 | 0 of 6 | 6 of 6 | the same value on every row: ranks nothing |" in card.text
    assert "| `mtld` | 20 to 60 | 1 of 6 | 2 of 6 | ranks rows |" in card.text
    assert "barely" not in card.text
    block = DatasetCard(str(card)).data.instructmining
    assert block["clipped"]["knn_6"] == {"n": 6, "below": 0, "above": 6, "ranks_nothing": True}

    drawn = picture_columns(scored, RULE, ["mtld", "knn_6", "instruct_score"])
    assert list(drawn) == ["mtld (clipped)", "knn_6 (clipped)", "instruct_score"]
    assert set(drawn["knn_6 (clipped)"]) == {0.6}  # the value the score used, not the raw 0.9 to 1.4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant column has no correlation
        assert np.isnan(np.corrcoef(drawn["knn_6 (clipped)"], drawn["instruct_score"])[0, 1])
    # the raw values correlate with the score although the score cannot move with them
    assert np.isfinite(np.corrcoef(scored["knn_6"], scored["instruct_score"])[0, 1])
    folder = save_scored(scored, tmp_path / "card", rule=RULE)
    assert (tmp_path / "card" / "images" / "indicators_against_score.png").is_file() and folder
