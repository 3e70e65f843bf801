"""Scored data records what made it, the record survives what it should, and cards never name the wrong rule."""

import dataclasses
import json
import os

import pytest
from datasets import Dataset, load_dataset, load_from_disk
from huggingface_hub import DatasetCard

from hf_instructmining import QualityRule, compute_indicators, save_scored, select_top_k
from hf_instructmining.errors import ScoreProvenanceError
from hf_instructmining.scoring.provenance import check_scores, read


RULE = QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, name="toy")
OTHER = QualityRule(0.5, {"mtld": -0.02, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, name="other")
ROWS = {
    "instruction": ["Say hi", "Count to three", "Name a colour", "Give a fruit"],
    "output": ["Hello there, my friend.", "one two three", "Blue, like the sea.", "An apple a day."],
}


@pytest.fixture(scope="module")
def scored():
    return compute_indicators(Dataset.from_dict(ROWS), ["input_length"], rule=RULE)


def test_every_written_column_records_how_it_was_made(scored):
    made = read(scored)
    assert made.rule == RULE
    assert set(made.indicators) == {"input_length", "mtld", "output_length"}
    assert made.indicators["mtld"] == {"indicator": "MTLD", "options": {"threshold": 0.72}}
    assert made.indicators["input_length"]["options"] == {"tokenizer": None, "revision": None}


@pytest.mark.parametrize(
    "transform",
    [
        lambda ds, tmp: ds.select([2, 0]),
        lambda ds, tmp: ds.filter(lambda row: row["mtld"] > 0),
        lambda ds, tmp: ds.map(lambda row: {"extra": 1}),
        lambda ds, tmp: ds.map(lambda batch: {"extra": [1] * len(batch["mtld"])}, batched=True),
        lambda ds, tmp: ds.add_column("extra", list(range(len(ds)))),
        lambda ds, tmp: ds.shuffle(seed=0),
        lambda ds, tmp: (ds.save_to_disk(str(tmp / "disk")), load_from_disk(str(tmp / "disk")))[1],
        lambda ds, tmp: (ds.to_parquet(str(tmp / "s.parquet")), Dataset.from_parquet(str(tmp / "s.parquet")))[1],
        lambda ds, tmp: (
            ds.to_parquet(str(tmp / "s.parquet")),
            load_dataset("parquet", data_files=str(tmp / "s.parquet"), split="train"),
        )[1],
    ],
    ids=["select", "filter", "map", "batched map", "add_column", "shuffle", "save_to_disk", "parquet", "load_dataset"],
)
def test_the_record_survives_datasets_operations_and_files(scored, tmp_path, transform):
    made = read(transform(scored, tmp_path))
    assert made.rule == RULE and set(made.indicators) == {"input_length", "mtld", "output_length"}


def test_json_lines_drop_the_record_but_the_formula_still_checks(scored, tmp_path):
    scored.to_json(str(tmp_path / "s.jsonl"), double_precision=15)
    back = load_dataset("json", data_files=str(tmp_path / "s.jsonl"), split="train")
    assert read(back).rule is None and read(back).indicators == {}
    assert check_scores(back, RULE) == RULE
    with pytest.raises(ScoreProvenanceError, match="formula gives other scores on 4 of 4 rows"):
        check_scores(back, OTHER)


def test_check_scores_names_the_recorded_rule_and_what_is_missing(scored):
    assert check_scores(scored, None) == RULE  # the recorded rule, when none is given
    with pytest.raises(ScoreProvenanceError, match="records that the rule `toy`") as error:
        check_scores(scored, OTHER)
    assert error.value.recorded == "toy" and error.value.rule == "other"
    llama = QualityRule.from_builtin("instructmining-llama-7b")
    with pytest.raises(ScoreProvenanceError, match="no `reward`, `knn_6` column"):
        check_scores(scored.remove_columns("instruct_score").add_column("instruct_score", [0.1] * 4), llama)
    changed = scored.map(lambda row: {"instruct_score": row["instruct_score"] + 1})
    with pytest.raises(ScoreProvenanceError, match="other scores on 4 of 4 rows"):
        check_scores(changed, None)  # the scores were changed after scoring: the recorded rule no longer holds
    assert check_scores(Dataset.from_dict({"instruct_score": [0.1]}), None) is None  # nothing recorded, nothing said
    # The same coefficients clipped to a range are another rule: they score rows differently.
    clipped = dataclasses.replace(RULE, domain={"mtld": (40.0, 60.0)})
    with pytest.raises(ScoreProvenanceError, match="records that the rule `toy`"):
        check_scores(scored, clipped)


def test_save_scored_refuses_a_rule_that_did_not_make_the_scores_and_writes_nothing(scored, tmp_path):
    with pytest.raises(ScoreProvenanceError, match="`instructmining-llama-7b`"):
        save_scored(scored, tmp_path / "out", rule=QualityRule.from_builtin("instructmining-llama-7b"))
    assert not (tmp_path / "out").exists()


def test_the_card_names_the_recorded_rule_and_how_each_column_was_made(scored, tmp_path):
    folder = save_scored(scored, tmp_path / "out", selection=select_top_k(scored, 2))
    assert QualityRule.load(os.path.join(folder, "instructmining_rule.json")) == RULE
    card = DatasetCard.load(os.path.join(folder, "README.md"))
    block = card.data.instructmining
    assert block["rule"]["name"] == "toy"
    assert block["indicators"]["mtld"] == {"threshold": 0.72, "recorded": True}
    assert set(block["indicators"]) == {"mtld", "output_length", "input_length"}
    assert "| `mtld` | – | `threshold=0.72` | recorded with the data |" in card.text


def test_a_card_from_unrecorded_scores_says_the_models_are_the_rules(tmp_path):
    ds = Dataset.from_dict({**ROWS, "mtld": [10.0, 20.0, 30.0, 40.0], "output_length": [4.0, 3.0, 4.0, 4.0]})
    ds = ds.add_column("instruct_score", RULE.predict(ds).tolist())
    card = DatasetCard.load(os.path.join(save_scored(ds, tmp_path / "out", rule=RULE), "README.md"))
    assert card.data.instructmining["indicators"]["mtld"] == {"recorded": False}
    assert "declared by the rule, not recorded" in card.text and "*declared by the rule*" in card.text


def test_the_record_is_plain_json_in_the_parquet_schema(scored, tmp_path):
    import pyarrow.parquet as pq

    scored.to_parquet(str(tmp_path / "s.parquet"))
    features = json.loads(pq.read_schema(tmp_path / "s.parquet").metadata[b"huggingface"])["info"]["features"]
    record = json.loads(features["instruct_score"]["id"])["hf_instructmining"]
    assert record["rule"]["name"] == "toy" and record["rule"]["coefficients"] == RULE.coefficients


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": "another-name"}, r"`name` \(`another-name` given, `toy` recorded\)"),
        (
            {"indicators": {"mtld": {}, "output_length": {"tokenizer": "gpt2"}}},
            r"`indicators.output_length` \(`tokenizer=gpt2` given, `tokenizer=None` recorded\)",
        ),
        (
            {"indicators": {"mtld": {"threshold": 0.5}, "output_length": {}}},
            r"`indicators.mtld` \(`threshold=0.5` given, `threshold=0.72` recorded\)",
        ),
        ({"domain": {"mtld": (0.0, 1e6)}}, r"`domain` \(`\{'mtld': \(0.0, 1000000.0\)\}` given, `None` recorded\)"),
    ],
    ids=["name", "tokenizer", "mtld threshold", "domain"],
)
def test_a_rule_with_the_same_numbers_but_another_recipe_is_refused_naming_what_differs(
    scored, tmp_path, change, named
):
    other = dataclasses.replace(RULE, **change)
    with pytest.raises(ScoreProvenanceError, match=named):
        check_scores(scored, other)
    with pytest.raises(ScoreProvenanceError, match=named):
        save_scored(scored, tmp_path / "out", rule=other)
    assert not (tmp_path / "out").exists()


def test_the_same_rule_with_its_defaults_written_out_is_the_same_rule(scored):
    explicit = dataclasses.replace(
        RULE, indicators={"mtld": {"threshold": 0.72}, "output_length": {"tokenizer": None}}
    )
    assert check_scores(scored, explicit) == explicit


def test_without_a_recorded_rule_the_recorded_indicator_options_must_match_the_rule(tmp_path):
    ds = compute_indicators(Dataset.from_dict(ROWS), ["mtld", "output_length"])  # indicators recorded, no rule
    ds = ds.add_column("instruct_score", RULE.predict(ds).tolist())
    assert check_scores(ds, RULE) == RULE
    fewer_words = dataclasses.replace(RULE, indicators={"mtld": {"threshold": 0.5}, "output_length": {}})
    with pytest.raises(ScoreProvenanceError, match=r"`mtld` was computed with `threshold=0.72`, the rule says `0.5`"):
        check_scores(ds, fewer_words)
    tokens = dataclasses.replace(RULE, indicators={"mtld": {}, "output_length": {"tokenizer": "gpt2"}})
    with pytest.raises(ScoreProvenanceError, match=r"`output_length` was computed with `tokenizer=None`"):
        check_scores(ds, tokens)


def _edit_parquet(folder, config, column, change):
    """Change one column of a saved folder's parquet shard in place, keeping its schema (and so its records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(folder, config, "train-00000-of-00001.parquet")
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    values = pa.array(change(table.column(column).to_pylist()), table.schema.field(column).type)
    pq.write_table(table.set_column(index, table.schema.field(column), values), path)
    assert read(Dataset.from_parquet(path)).indicators  # the records are still there


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda folder: _edit_parquet(folder, "scored", "instruct_score", lambda v: [x - 0.5 for x in v]),
            "other scores on 4 of 4 rows",
        ),
        (lambda folder: OTHER.save(os.path.join(folder, "instructmining_rule.json")), "records that the rule `toy`"),
        (
            lambda folder: _edit_parquet(folder, "selected", "instruct_score", lambda v: [x - 0.5 for x in v]),
            r"selected` is not a selection of .*row 0 .*`instruct_score`.*save_scored",
        ),
    ],
    ids=["scores", "rule file", "selection"],
)
def test_pushing_a_saved_folder_runs_the_checks_that_saving_ran(fake_hub, scored, tmp_path, edit, error):
    from hf_instructmining import push_to_hub

    folder = save_scored(scored, tmp_path / "out", selection=select_top_k(scored, 2))
    push_to_hub(folder, "me/untouched")  # the folder as written passes
    edit(folder)
    with pytest.raises(ValueError, match=error):
        push_to_hub(folder, "me/edited")
    assert ("dataset", "me/edited") not in fake_hub.repos  # refused before anything was uploaded


def test_texts_replaced_after_scoring_are_refused(fake_hub, scored, tmp_path):
    from hf_instructmining import push_to_hub

    replaced = scored.map(lambda row: {"output": row["output"].upper()})
    with pytest.raises(
        ScoreProvenanceError, match="texts in `instruction`, `output` are not the ones that were scored"
    ):
        check_scores(replaced, None)
    swapped = scored.map(lambda row, i: {"output": ROWS["output"][(i + 1) % 4]}, with_indices=True)
    with pytest.raises(ScoreProvenanceError, match="not the ones that were scored"):
        check_scores(swapped, RULE)
    assert check_scores(scored.shuffle(seed=1), None) == RULE  # the same rows in another order
    assert check_scores(scored.select([0, 2]), None) == RULE  # fewer rows: the digest cannot tell, nothing refused
    folder = save_scored(scored, tmp_path / "out")
    push_to_hub(folder, "me/untouched")
    _edit_parquet(folder, "scored", "output", lambda values: [value + "!" for value in values])
    with pytest.raises(ScoreProvenanceError, match="not the ones that were scored"):
        push_to_hub(folder, "me/edited")


def test_a_saved_folder_whose_rule_names_local_models_can_be_pushed(fake_hub, tmp_path):
    from hf_instructmining import push_to_hub

    local = dataclasses.replace(RULE, indicators={"mtld": {}, "output_length": {"tokenizer": str(tmp_path / "tok")}})
    ds = Dataset.from_dict({**ROWS, "mtld": [10.0, 20.0, 30.0, 40.0], "output_length": [4.0, 3.0, 4.0, 4.0]})
    folder = save_scored(ds.add_column("instruct_score", local.predict(ds).tolist()), tmp_path / "out", rule=local)
    push_to_hub(folder, "me/local-models")  # the rule is compared, never run: its local paths are no risk here
    assert "instructmining_rule.json" in fake_hub.files("me/local-models")


def test_the_digest_covers_texts_in_mapped_columns():
    mapping = {"instruction": "question", "output": "answer"}
    ds = Dataset.from_dict({"question": ROWS["instruction"], "answer": ROWS["output"]})
    scored = compute_indicators(ds, rule=RULE, column_mapping=mapping)
    assert check_scores(scored, RULE) == RULE
    replaced = scored.map(lambda row: {"answer": row["answer"][::-1]})
    with pytest.raises(ScoreProvenanceError, match="texts in `question`, `answer` are not the ones that were scored"):
        check_scores(replaced, RULE)


def test_a_rule_localised_to_the_offline_copies_is_the_rule_it_stands_in_for():
    # Offline, scoring runs `localize_rule(rule)`; its columns are recorded under the Hub ids, and pushing with the
    # rule itself must pass (examples/search_and_push.py does exactly this).
    from hf_instructmining.offline import localize_rule
    from hf_instructmining.scoring.provenance import _differences

    rule = QualityRule.from_builtin("instructmining-smollm2-135m")
    local = localize_rule(rule)
    assert local.indicators != rule.indicators
    assert _differences(rule, local) == []
    other = dataclasses.replace(local, indicators={**local.indicators, "output_length": {}})
    assert [d for d in _differences(rule, other) if "output_length" in d]
