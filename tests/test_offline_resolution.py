"""Offline copies stand in for their Hub ids in any rule, fail fast when nothing can load, and cards say so.

A tiny model registered as the offline copy of a made-up Hub id plays the part of SmolLM2 and MiniLM, so the
whole path runs in seconds; `tests/test_cli.py` runs it from the command line and the slow tests on the real copies.
"""

import logging
import warnings

import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators, offline
from hf_instructmining.scoring import InstructScorer
from hf_instructmining.scoring.plan import offline_rules, resolve_rule
from hf_instructmining.scoring.provenance import read


HUB_ID = "tiny-org/tiny-llama"
ROWS = {"instruction": ["Say hi", "Count to three"], "output": ["Hello there, my friend.", "one two three"]}


@pytest.fixture
def tiny_copy(monkeypatch, tiny_llama_dir):
    """`tiny-org/tiny-llama` has an offline copy: the tiny test model."""
    copy = offline.OfflineCopy(
        model_id=HUB_ID,
        package="pytest",
        module="pytest",
        install="pip install pytest",
        description="the tiny test model",
        folder=lambda: tiny_llama_dir,
        prepare=lambda: tiny_llama_dir,
    )
    monkeypatch.setitem(offline.OFFLINE_COPIES, HUB_ID, copy)
    offline.log_substitution.cache_clear()  # it warns once per process: each test sees its own warning
    return copy


def rule_naming(model: str) -> QualityRule:
    return QualityRule(
        0.5, {"perplexity": 0.01, "mtld": -0.001}, {"perplexity": {"model": model}, "mtld": {}}, name="tiny-rule"
    )


def test_offline_a_rule_s_hub_model_loads_from_its_copy_and_the_data_records_it(tiny_copy, tiny_llama_dir, caplog):
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="hf_instructmining"):
        warnings.simplefilter("error")  # in particular, no "not calibrated": the copy is the rule's own model
        scored = compute_indicators(Dataset.from_dict(ROWS), rule=rule_naming(HUB_ID), device="cpu")
    assert f"`{HUB_ID}` is loaded from its offline copy (the tiny test model)" in caplog.text
    record = read(scored).indicators["perplexity"]
    assert record["options"]["model"] == HUB_ID  # the public id, not the local folder
    assert record["offline_copy"] == {"of": HUB_ID, "package": "pytest", "version": tiny_copy.version,
                                      "note": "the tiny test model"}  # fmt: skip
    assert read(scored).rule.indicators["perplexity"] == {"model": HUB_ID}


def test_models_may_name_the_copy_or_the_hub_id_without_a_false_calibration_warning(tiny_copy, tiny_llama_dir):
    for given in (tiny_llama_dir, HUB_ID):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            scorer = InstructScorer(rule=rule_naming(HUB_ID), models={"perplexity": given})
        assert next(i for i in scorer._indicators if "perplexity" in i.columns).model == tiny_llama_dir
    with pytest.warns(UserWarning, match="not calibrated"):
        InstructScorer(rule=rule_naming("other-org/other-model"), models={"perplexity": tiny_llama_dir})


def test_a_model_in_the_hub_cache_or_online_is_used_as_it_is(tiny_copy, monkeypatch):
    monkeypatch.setattr(offline, "in_hub_cache", lambda model_id, revision=None: True)
    assert offline.offline_substitute(HUB_ID) is None
    monkeypatch.setattr(offline, "in_hub_cache", lambda model_id, revision=None: False)
    assert offline.offline_substitute(HUB_ID) == tiny_copy.prepare()
    monkeypatch.setattr(offline, "hub_reachable", lambda: True)
    assert offline.offline_substitute(HUB_ID) is None
    assert offline.offline_substitute("org/no-copy") is None


def test_hub_reachable_is_false_at_once_offline_and_probes_otherwise(fake_hub):
    assert offline.hub_reachable()  # the loopback fake Hub answers
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True  # fake_hub's monkeypatch restores it
    assert not offline.hub_reachable()


def test_nothing_loadable_fails_before_any_work_naming_model_column_and_fixes():
    rule = rule_naming("nowhere-org/no-model")
    with pytest.raises(ValueError, match=r"Cannot load `nowhere-org/no-model` \(for `perplexity`\).*offline") as error:
        compute_indicators(Dataset.from_dict(ROWS), rule=rule)
    assert "instructmining-smollm2-135m" in str(error.value) and "`models=`" in str(error.value)


def test_models_accepts_a_general_mapping_and_rejects_typos(caplog, tiny_tokenizer_dir):
    rule = QualityRule(1.0, {"output_length": 0.001}, {"output_length": {}})
    with caplog.at_level(logging.WARNING, logger="hf_instructmining"), pytest.warns(UserWarning, match="calibrated"):
        InstructScorer(rule=rule, models={"output_length": tiny_tokenizer_dir, "knn": "x", "perplexity": "y"})
    assert "['knn', 'perplexity'], which no indicator computed here uses: ignored" in caplog.text
    with pytest.raises(ValueError, match=r"\['outptu_length'\].*did you mean `output_length`"):
        InstructScorer(rule=rule, models={"outptu_length": tiny_tokenizer_dir})


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("instructmining-llama2-7", ValueError, r"did you mean `instructmining-llama2-7b`.*built-in rules are"),
        ("my_rule.json", FileNotFoundError, r"No rule file or folder `my_rule.json`"),
        ("./rules/mine", FileNotFoundError, r"No rule file or folder"),
        ("me/my-rule", ValueError, r"`me/my-rule` is not a built-in.*Hub is offline.*no cached copy"),
    ],
)
def test_unknown_rule_names_fail_at_once_listing_the_built_ins(name, error, message):
    with pytest.raises(error, match=message):
        resolve_rule(name)


def test_the_offline_rules_are_found_from_their_models(tiny_copy, monkeypatch):
    assert offline_rules() == ["instructmining-smollm2-135m"]
    monkeypatch.delitem(offline.OFFLINE_COPIES, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert offline_rules() == []  # its lengths and perplexities need SmolLM2


def test_copy_of_knows_the_copies_by_folder(tiny_copy, tiny_llama_dir, tmp_path):
    assert offline.copy_of(tiny_llama_dir) is tiny_copy
    assert offline.copy_of(str(tmp_path)) is None and offline.copy_of(HUB_ID) is None
    assert not offline.in_hub_cache("./not/a/repo-id")


def test_example_data_ships_in_the_package():
    ds = Dataset.from_json(offline.example_data_path())
    assert len(ds) == 303 and {"instruction", "input", "output", "style"} <= set(ds.column_names)
