"""Offline rendering of dataset, rule and model cards, the hand-written-part merge, and the saved folder layout."""

import dataclasses
import itertools
import json
import os

import pytest
from datasets import Dataset
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, ModelCard

from hf_instructmining import PushConfig, QualityRule, save_scored, select_top_k
from hf_instructmining.hub.cards import build_dataset_card, merge_card
from hf_instructmining.hub.model_cards import build_model_card, build_rule_card
from hf_instructmining.search import SearchResult
from tests.fixtures.hub import _card_schema_errors


FIT = {
    "n_subsets": 24,
    "r_squared": 0.81,
    "adj_r_squared": 0.78,
    "f_statistic": 31.5,
    "f_pvalue": 2.1e-7,
    "aic": -40.2,
    "bic": -37.9,
    "cv_r_squared": 0.66,
    "selection": "all",
    "table": {
        "intercept": {"coef": 0.9, "std_err": 0.05, "p_value": 1e-9, "vif": None},
        "mtld": {"coef": -0.004, "std_err": 0.001, "p_value": 0.002, "vif": 1.1},
        "output_length": {"coef": 0.0008, "std_err": 0.0003, "p_value": 0.03, "vif": 1.1},
    },
}


def make_rule(fitted: bool = True) -> QualityRule:
    return QualityRule(
        0.9,
        {"mtld": -0.004, "output_length": 0.0008},
        {"mtld": {}, "output_length": {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "main"}},
        provenance={"source": "fitted in tests", **({"fit": FIT} if fitted else {})},
        name="toy-rule",
    )


def make_scored(n: int = 40, rule: QualityRule | None = None) -> Dataset:
    rule = rule or make_rule()
    ds = Dataset.from_dict(
        {
            "instruction": [f"Question number {i}?" for i in range(n)],
            "output": [" ".join(["word"] * (5 + (7 * i) % 31)) for i in range(n)],
            "mtld": [10.0 + (13 * i) % 70 for i in range(n)],
            "output_length": [float(5 + (7 * i) % 31) for i in range(n)],
        }
    )
    return ds.add_column("instruct_score", rule.predict(ds).tolist())


def make_search() -> SearchResult:
    trace = [
        {"trial": 1, "k": 5, "loss": 1.3, "time_s": 1.0, "selection": "rule"},
        {"trial": 2, "k": 20, "loss": 1.1, "time_s": 2.0, "selection": "rule"},
        {"trial": 3, "k": 10, "loss": 1.0, "time_s": 1.5, "selection": "rule"},
    ]
    return SearchResult(best_k=10, best_loss=1.0, trace=trace, low=5, high=40)


FULL_LAYOUT = [  # a folder (or repo) with a rule, a selection and a search
    "README.md",
    "images/indicators_against_score.png",
    "images/score_histogram.png",
    "images/search_curve.png",
    "instructmining_rule.json",
    "instructmining_search.json",
    "scored/train-00000-of-00001.parquet",
    "selected/train-00000-of-00001.parquet",
]
COMBINATIONS = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize(("with_rule", "with_selection", "with_search"), COMBINATIONS)
def test_dataset_card_renders_every_combination(with_rule, with_selection, with_search):
    rule = make_rule() if with_rule else None
    scored = make_scored()
    selection = select_top_k(scored, 10) if with_selection else None
    search = make_search() if with_search else None

    card = build_dataset_card(scored, rule=rule, selection=selection, search=search, repo_id="me/scored")
    text = str(card)

    assert "{{" not in text and "{%" not in text
    assert _card_schema_errors(card.data.to_dict(), "dataset") == []
    reloaded = DatasetCard(text)
    assert reloaded.data.to_dict() == card.data.to_dict()
    block = reloaded.data.instructmining
    assert "instructmining" in reloaded.data.tags
    assert block["lower_is_better"] is True and block["score_column"] == "instruct_score"
    assert block["score_statistics"]["scored"]["n"] == 40
    assert reloaded.data.size_categories == ["n<1K"]
    configs = MetadataConfigs.from_dataset_card_data(reloaded.data)
    assert sorted(configs) == (["scored", "selected"] if with_selection else ["scored"])
    assert "predicted log evaluation loss" in text and "Lower is better" in text
    assert "arXiv" in text or "2307.06290" in text
    assert ("log L_eval = 0.9 - 0.004·mtld + 0.0008·output_length" in text) == with_rule
    assert ("| `mtld` | -0.004 | 0.001 | 0.002 | 1.1 |" in text) == with_rule
    assert ("rule" in block) == with_rule
    if with_rule:
        assert block["rule"]["coefficients"] == {"mtld": -0.004, "output_length": 0.0008}
        assert block["rule"]["fit"]["r_squared"] == 0.81
        assert block["indicators"]["output_length"]["revision"] == "main"
    assert ("selection" in block) == with_selection
    if with_selection:
        assert block["selection"]["size"] == 10
        assert block["score_statistics"]["selected"]["max"] == block["selection"]["max_score"]
        assert 'load_dataset("me/scored", "selected", split="train")' in text
        assert "select_top_k(scored, 10)" in text
    assert ("images/search_curve.png" in text) == with_search
    assert (block.get("search") == {"best_k": 10, "best_loss": 1.0, "num_trials": 3}) == with_search
    assert "images/score_histogram.png" in text


def test_unfitted_rule_says_so_and_has_no_fit_statistics():
    rule = make_rule(fitted=False)
    card = build_dataset_card(make_scored(rule=rule), rule=rule)
    assert "fit" not in card.data.instructmining["rule"]
    assert "std. error" not in card.text
    assert "not fitted here" in card.text


def test_a_rule_with_a_domain_says_where_it_clips():
    rule = dataclasses.replace(make_rule(), domain={"mtld": (20.0, 60.0)})
    card = build_dataset_card(make_scored(rule=rule), rule=rule)
    assert "clipped to (the range fitted on)" in card.text
    assert "| `mtld` | -0.004 | 0.001 | 0.002 | 1.1 |  | 20 to 60 |" in card.text
    assert card.data.instructmining["rule"]["domain"] == {"mtld": [20.0, 60.0]}
    assert "clipped" not in str(build_dataset_card(make_scored(), rule=make_rule()))
    assert "Outside the rule's range" not in card.text  # the mean mtld (43) lies within 20 to 60
    narrow = dataclasses.replace(rule, domain={"mtld": (50.0, 60.0)})
    card = build_dataset_card(make_scored(rule=narrow), rule=narrow)
    assert "**Outside the rule's range.** This dataset's mean of `mtld` 43 (fitted 50 to 60) lies outside" in card.text


def test_license_and_source_are_carried_over():
    scored = make_scored()
    scored.info.license = "cc-by-4.0"
    card = build_dataset_card(
        scored, config=PushConfig(source_dataset="tatsu-lab/alpaca", pretty_name="Alpaca, mined")
    )
    assert card.data.license == "cc-by-4.0"
    assert card.data.source_datasets == ["tatsu-lab/alpaca"]
    assert "\n# Alpaca, mined\n" in card.text
    assert 'load_dataset("tatsu-lab/alpaca", split="train")' in card.text
    assert build_dataset_card(scored, config=PushConfig(license="mit")).data.license == "mit"


def test_notes_fill_the_hand_written_section_of_a_new_card():
    card = build_dataset_card(make_scored(), rule=make_rule(), config=PushConfig(notes="Scored for a workshop."))
    assert "## Notes" in card.text and "Scored for a workshop." in card.text
    assert "[More Information Needed]" not in card.text
    assert "[More Information Needed]" in build_dataset_card(make_scored(), rule=make_rule()).text  # for the owner


def test_merge_keeps_hand_written_sections_and_yaml_keys():
    first = build_dataset_card(make_scored(), rule=make_rule(), repo_id="me/scored")
    edited = str(first).replace("[More Information Needed]", "Collected by hand; see our blog post.")
    edited = edited.replace("---\n", "---\nlanguage:\n- en\n", 1)
    edited += "\n## Our own section\n\nKept forever.\n"

    second = build_dataset_card(make_scored(n=60), rule=make_rule(), repo_id="me/scored")
    merged = merge_card(second, edited)

    text = str(merged)
    assert "Collected by hand; see our blog post." in text and "Kept forever." in text
    assert merged.data.language == ["en"]
    assert merged.data.instructmining["score_statistics"]["scored"]["n"] == 60
    assert "60 instruction–response rows" in text and "40 instruction–response rows" not in text
    assert str(merge_card(second, text)) == text  # merging again changes nothing


def test_merge_into_a_card_without_generated_block_keeps_its_body_below():
    new = build_dataset_card(make_scored())
    merged = merge_card(new, "---\nlicense: mit\n---\n# My dataset\n\nWritten by hand.\n")
    assert merged.data.license == "mit"
    assert merged.text.index("<!-- instructmining:generated:end -->") < merged.text.index("Written by hand.")


def test_rule_card_round_trips_and_shows_the_fit():
    card = build_rule_card(make_rule(), "me/toy-rule")
    reloaded = ModelCard(str(card))
    assert reloaded.data.to_dict() == card.data.to_dict()
    assert reloaded.data.instructmining["rule"]["fit"]["n_subsets"] == 24
    assert 'QualityRule.from_pretrained("me/toy-rule")' in card.text
    assert "fitted in tests" in card.text and "adjusted R² = 0.78" in card.text


def test_cards_of_a_rule_fitted_to_a_score_name_its_response():
    fit = {**FIT, "target": "log(1 - eval_rougeL)", "label": "eval_rougeL", "higher_is_better": True}
    rule = make_rule()
    rule.provenance["fit"] = fit
    formula = "`log(1 - eval_rougeL) = 0.9 - 0.004·mtld + 0.0008·output_length`"
    note = "fitted to `eval_rougeL`, a score where higher is better, rather than to the evaluation loss"

    dataset_card = build_dataset_card(make_scored(rule=rule), rule=rule)
    rule_card = build_rule_card(rule, "me/rougeL-rule")
    model_card = build_model_card("me/m", "base", "me/scored", rule=rule)
    for card in (dataset_card, rule_card, model_card):
        assert formula in card.text and note in card.text and "{{" not in str(card)
        assert "log evaluation loss" not in card.text and "log L_eval" not in card.text
    assert "the **predicted `log(1 - eval_rougeL)`** of a model" in dataset_card.text
    assert "Fitted by ordinary least squares of `log(1 - eval_rougeL)` on" in dataset_card.text
    assert "predicts the **`log(1 - eval_rougeL)`** of a model" in rule_card.text
    assert "chosen by the lowest\npredicted `log(1 - eval_rougeL)` (lower is better)" in model_card.text
    block = DatasetCard(str(dataset_card)).data.instructmining
    assert block["target"] == "log(1 - eval_rougeL)" and block["rule"]["target"] == "log(1 - eval_rougeL)"
    assert ModelCard(str(rule_card)).data.instructmining["rule"]["target"] == "log(1 - eval_rougeL)"
    # An eval-loss rule's block keeps the paper's target and no per-rule one.
    block = build_dataset_card(make_scored(), rule=make_rule()).data.instructmining
    assert block["target"] == "log_eval_loss" and "target" not in block["rule"]


def test_model_card_links_dataset_and_rule():
    card = build_model_card(
        "me/smol-selected",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "me/scored",
        rule=make_rule(),
        num_train_rows=10,
        eval_loss=1.2345,
        training="TRL SFTTrainer, LoRA r=8, 1 epoch",
    )
    reloaded = ModelCard(str(card))
    assert reloaded.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert reloaded.data.datasets == ["me/scored"]
    assert "instructmining" in reloaded.data.tags
    for expected in ("https://huggingface.co/datasets/me/scored", "10 rows", "`toy-rule`", "1.234", "LoRA r=8"):
        assert expected in card.text
    assert "{{" not in str(build_model_card("m", "b", "d"))


def test_save_scored_writes_the_layout_deterministically(tmp_path):
    rule, scored = make_rule(), make_scored()
    selection, search = select_top_k(scored, 10), make_search()

    first = save_scored(scored, tmp_path / "a", rule, selection, search)
    second = save_scored(scored, tmp_path / "b", rule, selection, search)

    files = sorted(os.path.relpath(os.path.join(r, f), first) for r, _, fs in os.walk(first) for f in fs)
    assert files == FULL_LAYOUT
    for name in files:
        with open(os.path.join(first, name), "rb") as f, open(os.path.join(second, name), "rb") as g:
            assert f.read() == g.read(), name
    assert QualityRule.load(first) == rule
    with open(os.path.join(first, "instructmining_search.json")) as f:
        assert SearchResult.from_dict(json.load(f)) == search
    scored_back = Dataset.from_parquet(os.path.join(first, "scored", "train-00000-of-00001.parquet"))
    assert scored_back["row_index"] == list(range(40))
    assert scored_back["instruct_score"] == pytest.approx(scored["instruct_score"])


def test_save_scored_again_keeps_hand_edits_and_drops_stale_files(tmp_path):
    rule, scored = make_rule(), make_scored()
    folder = save_scored(scored, tmp_path, rule, select_top_k(scored, 10), make_search())
    readme = os.path.join(folder, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text.replace("[More Information Needed]", "A note of ours."))

    save_scored(scored, folder)  # no rule, selection or search this time

    assert sorted(os.listdir(folder)) == ["README.md", "images", "scored"]
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    assert "A note of ours." in text and "toy-rule" not in text


def test_save_scored_shards_large_data(tmp_path):
    folder = save_scored(make_scored(), tmp_path, config=PushConfig(max_shard_size=1000))
    shards = sorted(os.listdir(os.path.join(folder, "scored")))
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")
    assert len(Dataset.from_parquet(os.path.join(folder, "scored", "*.parquet"))) == 40


def test_save_scored_checks_its_inputs(tmp_path):
    scored = make_scored()
    with pytest.raises(ValueError, match="no `instruct_score` column"):
        save_scored(scored.remove_columns("instruct_score"), tmp_path)
    with pytest.raises(ValueError, match="no `row_index` column"):
        save_scored(scored, tmp_path, selection=scored.select(range(3)))
    with pytest.raises(ValueError, match="points outside"):
        save_scored(scored.select(range(5)), tmp_path, selection=select_top_k(scored, 10))
    with pytest.raises(ValueError, match="max_shard_size"):
        PushConfig(max_shard_size=0)
