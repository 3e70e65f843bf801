"""Hostile input: rule files that try to run code or read what they should not, and oversized names in errors."""

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hf_instructmining import InstructScorer, QualityRule
from hf_instructmining.errors import InvalidExampleError, RuleFormatError, UnknownFormatError
from hf_instructmining.formats import extract_pairs
from hf_instructmining.indicators import get_indicator
from hf_instructmining.rules import RULE_FILENAME, builtin_rules


ROOT = Path(__file__).resolve().parents[1]
ROWS = {"instruction": ["Say hi", "Count to three"], "output": ["Hello there.", "One, two, three."]}
HUGE = "x" * 2**20  # a 1 MB name


def _code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config asks `transformers` to import its own Python file, which leaves `marker`."""
    folder.mkdir(parents=True)
    auto_map = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    tokenizer_map = {"AutoTokenizer": ["evil_code.EvilTokenizer", None]}  # the tokenizer loads first
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": tokenizer_map}))
    (folder / "evil_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    return folder


def _rule_dict(spec: dict, column: str = "perplexity") -> dict:
    return {
        "schema_version": 1,
        "name": "hostile",
        "target": "log_eval_loss",
        "intercept": 1.0,
        "coefficients": {column: 0.01},
        "indicators": {column: spec},
        "provenance": {},
    }


def _load_then_score(load) -> RuleFormatError | None:
    """What a user does with a downloaded rule: load it, then score with it. Returns the refusal, if any."""
    try:
        rule = load()
    except RuleFormatError as err:
        return err
    with contextlib.suppress(Exception):  # whatever scoring raises after the code ran is beside the point
        Dataset.from_dict(ROWS).map(InstructScorer(rule, device="cpu"))
    return None


@pytest.mark.parametrize("how", ["load", "from_pretrained"])
def test_a_rule_file_cannot_make_scoring_run_code(tmp_path, how):
    marker = tmp_path / "marker"
    folder = tmp_path / "rule"
    model = _code_model(folder / "model", marker)
    (folder / RULE_FILENAME).write_text(json.dumps(_rule_dict({"model": str(model), "trust_remote_code": True})))
    if how == "load":
        refused = _load_then_score(lambda: QualityRule.load(folder / RULE_FILENAME))
    else:
        refused = _load_then_score(lambda: QualityRule.from_pretrained(str(folder)))
    assert not marker.exists(), "the rule's model code ran"
    assert refused is not None, "the rule loaded"
    assert "`indicators.perplexity.trust_remote_code`" in str(refused) and str(folder) in str(refused)
    assert "a rule is data" in str(refused) and "trust_remote_code=True" in str(refused)  # how to do it oneself


def test_a_rule_from_the_hub_is_checked_as_a_local_one(fake_hub, tmp_path):
    from huggingface_hub import HfApi

    path = tmp_path / RULE_FILENAME
    api = HfApi()
    api.create_repo("someone/rule")
    for spec, field in (
        ({"model": "someone/custom-lm", "trust_remote_code": True}, "trust_remote_code"),
        ({"model": str(tmp_path)}, "model"),  # a folder on the reader's machine, not in the repo
    ):
        path.write_text(json.dumps(_rule_dict(spec)))
        api.upload_file(path_or_fileobj=str(path), path_in_repo=RULE_FILENAME, repo_id="someone/rule")
        with pytest.raises(RuleFormatError, match=rf"`indicators\.perplexity.*{field}") as err:
            QualityRule.from_pretrained("someone/rule")
        assert RULE_FILENAME in str(err.value)


def test_a_model_inside_the_rule_s_folder_still_cannot_run_its_code(tmp_path):
    """A rule may name a model folder of its own, but never the option that runs that folder's code."""
    marker = tmp_path / "marker"
    folder = tmp_path / "rule"
    _code_model(folder / "model", marker)
    (folder / RULE_FILENAME).write_text(json.dumps(_rule_dict({"model": "./model"})))
    rule = QualityRule.load(folder)
    assert rule.indicators["perplexity"]["model"] == str((folder / "model").resolve())  # found from any folder
    with pytest.raises(Exception, match="trust_remote_code"):  # transformers refuses the custom code
        Dataset.from_dict(ROWS).map(InstructScorer(rule, device="cpu"))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("column", "option", "value"),
    [
        ("perplexity", "trust_remote_code", True),
        ("reward", "trust_remote_code", False),  # even off: the rule has no say in it
        ("perplexity", "subfolder", "evil"),
        ("perplexity", "gguf_file", "model.gguf"),
        ("perplexity", "code_revision", "main"),
        ("output_length", "trust_remote_code", True),
        ("knn_6", "reference", "/etc"),
        ("perplexity", "device", "cuda:7"),
    ],
)
def test_a_rule_may_set_only_the_options_that_define_its_columns(tmp_path, column, option, value):
    path = tmp_path / "rule.json"
    path.write_text(json.dumps(_rule_dict({option: value}, column)))
    with pytest.raises(RuleFormatError, match=rf"`indicators\.{column}.*{option}") as err:
        QualityRule.load(path)
    assert str(path) in str(err.value) and len(str(err.value)) < 800
    # Built in Python, a rule is the same data: it would save into a file that cannot be loaded.
    with pytest.raises(RuleFormatError, match=rf"`indicators\.{column}.*{option}"):
        QualityRule(1.0, {column: 0.01}, {column: {option: value}})


@pytest.mark.parametrize("value", [5, ["main"], {"ref": "main"}])
def test_model_names_and_revisions_are_strings(tmp_path, value):
    for option in ("model", "revision"):
        with pytest.raises(RuleFormatError, match=rf"`indicators\.perplexity`.*`{option}` must be"):
            QualityRule.from_dict(_rule_dict({option: value}))


@pytest.mark.parametrize("revision", ["../../../../.bashrc", "main/../../x", "/etc", "a b", "x" * 300])
def test_a_revision_is_a_branch_tag_or_commit_name(revision):
    """`huggingface_hub` writes a downloaded revision's name as a file under its cache's `refs/`: no climbing out."""
    for column, option in (("perplexity", "model"), ("output_length", "tokenizer")):
        spec = {option: "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": revision}
        with pytest.raises(
            RuleFormatError, match=rf"`indicators\.{column}`.*`revision` must be a branch, tag or commit"
        ):
            QualityRule.from_dict(_rule_dict(spec, column))
    for ok in ("main", "v1.0", "refs/pr/1", "0123456789abcdef0123456789abcdef01234567"):
        assert QualityRule.from_dict(_rule_dict({"revision": ok})).indicators["perplexity"]["revision"] == ok


def test_a_rule_file_names_hub_ids_or_folders_inside_its_own_folder(tmp_path):
    folder = tmp_path / "rule"
    (folder / "tok").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder / "escape").symlink_to(outside)
    path = folder / RULE_FILENAME
    ok = {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "refs/pr/1"}
    path.write_text(json.dumps(_rule_dict(ok, "output_length")))
    assert QualityRule.load(path).indicators["output_length"] == ok
    for value in (str(folder / "tok"), "tok/", "./tok"):
        path.write_text(json.dumps(_rule_dict({"tokenizer": value}, "output_length")))
        assert QualityRule.from_pretrained(str(folder)).indicators["output_length"]["tokenizer"] == str(
            (folder / "tok").resolve()
        )
    for value in (str(outside), "../elsewhere", "./escape", "~/models/x", "/etc", "a/../../b"):
        path.write_text(json.dumps(_rule_dict({"tokenizer": value}, "output_length")))
        with pytest.raises(RuleFormatError, match=r"`indicators\.output_length\.tokenizer`") as err:
            QualityRule.load(path)
        assert "outside the rule's folder" in str(err.value) and "models=" in str(err.value)
        # The caller's own say-so: a rule they made themselves, fitted on their local models.
        assert QualityRule.load(path, allow_local_paths=True).indicators["output_length"]["tokenizer"] == value


def test_the_builtin_rules_still_load_and_the_offline_rule_still_runs_offline(tmp_path):
    from hf_instructmining.offline import OFFLINE_COPIES
    from hf_instructmining.scoring.plan import offline_rules

    for name in builtin_rules():
        rule = QualityRule.from_builtin(name)
        assert QualityRule.load(rule.save(tmp_path / f"{name}.json")) == rule  # every field survives a file
    assert offline_rules() == ["instructmining-smollm2-135m"]
    specs = QualityRule.from_builtin("instructmining-smollm2-135m").indicators.values()
    assert {s.get("model") or s.get("tokenizer") for s in specs} - {None} <= set(OFFLINE_COPIES)


# -- reading a rule file with a bound ---------------------------------------------------------------------------


def _load_in_a_child(path: str) -> subprocess.CompletedProcess:
    """`QualityRule.load(path)` in a process with 1 GiB of address space and a minute: an unbounded read or a
    blocking open fails the test instead of exhausting the machine or hanging it."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    code = "import sys; from hf_instructmining import QualityRule; QualityRule.load(sys.argv[1])"
    try:
        return subprocess.run(
            [sys.executable, "-c", code, path], cwd=ROOT, preexec_fn=limit, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path} still blocks after 60 s")


def test_a_device_is_not_read_until_memory_runs_out():
    done = _load_in_a_child("/dev/zero")
    assert done.returncode == 1 and "MemoryError" not in done.stderr
    assert "RuleFormatError: /dev/zero: not a regular file (a character device)" in done.stderr


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "rule.json"
    os.mkfifo(fifo)
    done = _load_in_a_child(str(fifo))
    assert done.returncode == 1 and f"RuleFormatError: {fifo}: not a regular file (a named pipe)" in done.stderr


def test_an_oversized_file_is_refused_after_reading_only_the_limit(tmp_path):
    from hf_instructmining.rules.checks import MAX_RULE_BYTES

    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MAX_RULE_BYTES + 1))
    with pytest.raises(RuleFormatError, match="more than 10,000,000 bytes"):
        QualityRule.load(path)


# -- indicator names ------------------------------------------------------------------------------------------


def test_a_huge_knn_k_is_refused_when_the_rule_loads():
    with pytest.raises(RuleFormatError, match=r"`indicators\.knn_100000000000`.*at most 1,000"):
        QualityRule.from_dict(_rule_dict({}, "knn_100000000000"))
    with pytest.raises(ValueError, match="at most 1,000"):
        get_indicator("knn_1001")
    assert get_indicator("knn_1000").k == 1_000


# -- echoed names are capped ----------------------------------------------------------------------------------


def test_shorten_keeps_short_values_and_caps_long_ones():
    from hf_instructmining.errors import shorten

    assert shorten("instruction") == "instruction"
    assert shorten(HUGE) == "x" * 60 + "… (1,048,576 chars)"
    assert shorten(["a", HUGE]) == "['a', '" + "x" * 60 + "…' (1,048,576 chars)]"
    assert shorten([str(i) for i in range(100)]).endswith("'19', … (80 more)]")


def test_a_1mb_column_name_gives_a_short_error_that_still_names_the_row_and_the_fix():
    ds = {"instruction": ["a", "b"], "output": ["x", ""], HUGE: [1, 2]}
    with pytest.raises(InvalidExampleError) as err:
        extract_pairs(ds, indices=[7, 8])
    message = str(err.value)
    assert len(message) < 500 and message.startswith("row 8: the response (`output`) is empty")
    assert "1,048,576 chars" in message and "column_mapping=" in message
    with pytest.raises(UnknownFormatError) as err:
        extract_pairs({HUGE: ["a"], "output": ["x"]})
    assert len(str(err.value)) < 500 and "column_mapping=" in str(err.value)
    with pytest.raises(UnknownFormatError) as err:
        extract_pairs({"instruction": ["a"], "output": ["x"]}, column_mapping={"output": HUGE})
    assert len(str(err.value)) < 500 and "1,048,576 chars" in str(err.value)
    with pytest.raises(ValueError) as err:
        extract_pairs({"instruction": ["a"], "output": ["x"]}, column_mapping={HUGE: "output"})
    assert len(str(err.value)) < 500 and "roles are" in str(err.value)


def test_a_1mb_indicator_name_gives_a_short_error():
    with pytest.raises(ValueError) as err:
        get_indicator(HUGE)
    assert len(str(err.value)) < 700 and "Known indicators" in str(err.value)
    for data in (
        {**_rule_dict({}, "mtld"), "coefficients": {HUGE: 1.0}, "indicators": {HUGE: {}}},
        _rule_dict({HUGE: 1}, "mtld"),
        _rule_dict({"threshold": HUGE}, "mtld"),
        {**_rule_dict({}, "mtld"), HUGE: 1},
        {**_rule_dict({}, "mtld"), "indicators": {"mtld": {}, HUGE: {}}},
        {**_rule_dict({}, "mtld"), "domain": {HUGE: [0, 1]}},
        {**_rule_dict({}, "mtld"), "schema_version": 3, "transforms": {HUGE: "log"}},
        {**_rule_dict({}, "mtld"), "schema_version": 3, "transforms": {"mtld": HUGE}},
        {**_rule_dict({}, "mtld"), "schema_version": 3, "out_of_range": HUGE},
    ):
        with pytest.raises(RuleFormatError) as err:
            QualityRule.from_dict(data, source="rule.json")
        assert len(str(err.value)) < 700 and str(err.value).startswith("rule.json: ")
