"""Bad inputs to every command: one line on stderr naming the flag, file or row and the fix, never a traceback.

Each case runs `instructmining` in this process (stderr captured at the file-descriptor level, so library logs
written by their own handlers count too) and checks the exit code (2 for a command line that does not parse,
1 for any other error), that stderr holds exactly one line, that the line says what it must, and that no
traceback is printed.
"""

import json
import math

import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators
from hf_instructmining.cli import COMMANDS, describe, main
from hf_instructmining.offline import example_data_path


TOY_RULE = QualityRule(
    1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, {"source": "test"}, name="toy"
)
OTHER_RULE = QualityRule(0.5, {"mtld": -0.02, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, name="other")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of good, broken and scored inputs, built once."""
    folder = tmp_path_factory.mktemp("cli-inputs")
    lines = open(example_data_path(), encoding="utf-8").read().splitlines()[:12]
    (folder / "good.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "empty.jsonl").write_text("")
    (folder / "blank.jsonl").write_text("\n\n  \n")
    (folder / "broken.jsonl").write_text("\n".join([*lines[:3], '{"instruction": "x", "output": ', *lines[3:5]]))
    (folder / "broken.json").write_text('[{"instruction": "x", "output": "y"},\n {"instruction": ]')
    (folder / "notes.txt").write_text("hello\n")
    (folder / "emptydir").mkdir()
    (folder / "wrongcols.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n')
    (folder / "emptyresp.jsonl").write_text(
        '{"instruction": "a", "output": ""}\n{"instruction": "c", "output": "d"}\n'
    )
    (folder / "badrule.json").write_text("{not json")
    (folder / "notarule.json").write_text('{"a": 1}')
    (folder / "corrupt.parquet").write_text("garbage")
    (folder / "wrong.csv").write_text("a,b\n1,2\n")
    (folder / "unknown.yaml").write_text("dataset: good.jsonl\nbogus_key: 1\noutput: o.jsonl\n")
    (folder / "broken.yaml").write_text("dataset: [good.jsonl\n")
    (folder / "list.yaml").write_text("- dataset\n- good.jsonl\n")
    (folder / "emptystore.jsonl").write_text("")
    (folder / "badsearch.json").write_text("{\n")
    (folder / "listsearch.json").write_text("[1, 2]\n")
    (folder / "toy_rule.json").write_text(json.dumps(TOY_RULE.to_dict()))
    # JSON that is not rows: a top-level `null` crashed the interpreter inside `datasets`' JSON reader
    (folder / "null.json").write_text("null\n")
    (folder / "latenull.jsonl").write_text("\n".join([*lines[:2], "null", *lines[2:4]]) + "\n")
    (folder / "latenull.json").write_text("\n".join([*lines[:2], "null", *lines[2:4]]) + "\n")  # JSON Lines too
    (folder / "truncated.jsonl").write_text("\n".join([*lines[:3], '{"instruction": "x", "output": ']) + "\n")
    (folder / "latin1.jsonl").write_bytes('{"instruction": "Caf\u00e9?", "output": "Cr\u00e8me."}\n'.encode("latin-1"))
    (folder / "latin1.csv").write_bytes("instruction,output\nCaf\u00e9?,Cr\u00e8me.\n".encode("latin-1"))
    (folder / "four.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (folder / "openquote.csv").write_text('instruction,output\n"Say hi,Hello\n')
    (folder / "other_rule.json").write_text(json.dumps(OTHER_RULE.to_dict()))
    good = Dataset.from_json(str(folder / "good.jsonl"))
    scored = compute_indicators(good, rule=TOY_RULE)
    scored.to_parquet(str(folder / "scored.parquet"))
    scored.to_json(str(folder / "scored.jsonl"), double_precision=15)
    scored.map(lambda row: {"instruct_score": math.nan}).to_parquet(str(folder / "nan_scored.parquet"))
    return folder


@pytest.fixture
def run(inputs, monkeypatch, capfd):
    """Run the command line in `inputs`; returns `(exit code, stdout, stderr)`."""
    import datasets
    import transformers

    monkeypatch.chdir(inputs)
    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()

    def run_command(*args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return code, out, err

    yield run_command
    datasets.enable_progress_bars()
    transformers.logging.enable_progress_bar()


S = ["--dataset", "good.jsonl", "--output", "o.jsonl"]  # score: good input, good output
SEL = ["--dataset", "scored.parquet", "--output", "o.jsonl"]  # select: scored input
PUSH = ["--dataset", "scored.parquet"]
TRAIN = ["--store", "l.jsonl", "--model_name_or_path", "{tiny_llama}", "--eval_dataset", "good.jsonl"]
SEARCH = ["--model_name_or_path", "{tiny_llama}", "--eval_dataset", "good.jsonl", "--output_dir", "s"]
# (arguments, exit code, what the one line must say); one case a line or two, as a table reads
# fmt: off
CASES = [
    # score: inputs
    (["score", "--dataset", "missing.jsonl", "--output", "o.jsonl"], 1, ["`missing.jsonl`", "--dataset"]),
    (["score", "--dataset", "empty.jsonl", "--output", "o.jsonl"], 1, ["`empty.jsonl`", "is empty"]),
    (["score", "--dataset", "blank.jsonl", "--output", "o.jsonl"], 1, ["`blank.jsonl`", "is empty"]),
    (["score", "--dataset", "broken.jsonl", "--output", "o.jsonl"], 1, ["`broken.jsonl`", "line 4", "fix or remove"]),
    (["score", "--dataset", "broken.json", "--output", "o.jsonl"], 1, ["`broken.json`", "not valid JSON", "line 2"]),
    (["score", "--dataset", "notes.txt", "--output", "o.jsonl"], 1, ["`notes.txt`", "unknown file type"]),
    (["score", "--dataset", "emptydir", "--output", "o.jsonl"], 1, ["`emptydir`", "--dataset"]),
    (["score", "--dataset", "nobody/nothing", "--output", "o.jsonl"], 1, ["`nobody/nothing`", "Hub"]),
    (["score", "--dataset", "corrupt.parquet", "--output", "o.jsonl"], 1, ["`corrupt.parquet`", "parquet"]),
    (["score", "--dataset", "wrongcols.jsonl", "--output", "o.jsonl", "--rule", "toy_rule.json"], 1,
     ["no known layout", "--column_mapping"]),
    (["score", "--dataset", "wrong.csv", "--output", "o.jsonl", "--rule", "toy_rule.json"], 1,
     ["['a', 'b']", "--column_mapping"]),
    (
        ["score", "--dataset", "emptyresp.jsonl", "--output", "o.jsonl", "--rule", "toy_rule.json"],
        1,
        ["row 0", "is empty", "`--on_invalid nan`"],
    ),
    # score: rules
    (
        ["score", *S, "--rule", "instructmining-llama2-7"],
        1,
        ["(did you mean `instructmining-llama2-7b`?)", "built-in"],
    ),
    (["score", *S, "--rule", "missing_rule.json"], 1, ["`missing_rule.json`", "built-in rules"]),
    (["score", *S, "--rule", "badrule.json"], 1, ["badrule.json", "not valid JSON"]),
    (["score", *S, "--rule", "notarule.json"], 1, ["notarule.json", "unknown field"]),
    (["score", *S, "--rule", "me/my-rule"], 1, ["`me/my-rule`", "offline", "built-in rules"]),
    (
        ["score", *S, "--rule", "instructmining-llama-7b"],
        1,
        ["OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5", "instructmining-smollm2-135m"],
    ),
    (["score", *S], 1, ["MingZhong/unieval-dialog", "offline"]),
    # score: indicators and models
    (["score", *S, "--indicators", ""], 1, ["`--indicators ''`", "names no indicator"]),
    (["score", *S, "--indicators", " , "], 1, ["`--indicators", "names no indicator"]),
    (["score", *S, "--indicators", "bleu"], 1, ["['bleu']", "the indicators are"]),
    (["score", *S, "--indicators", "mtdl"], 1, ["did you mean `mtld`"]),
    (["score", *S, "--indicators", "perplexity"], 1, ["meta-llama/Llama-2-7b-hf", "--models"]),
    (["score", *S, "--rule", "toy_rule.json", "--models", "notjson"], 1, ["`--models`", "not valid JSON"]),
    (["score", *S, "--rule", "toy_rule.json", "--models", "[1]"], 1, ["`--models`", "JSON object"]),
    (["score", *S, "--rule", "toy_rule.json", "--models", '{"mtl": "x"}'], 1, ["`--models`", "did you mean `mtld`"]),
    (["score", *S, "--rule", "toy_rule.json", "--models", '{"mtld": "x"}'], 1, ["`--models`", "uses no model"]),
    (
        ["score", *S, "--indicators", "perplexity", "--models", '{"perplexity": "./no-such-model"}'],
        1,
        ["`./no-such-model`", "perplexity"],
    ),
    (["score", *S, "--rule", "toy_rule.json", "--column_mapping", "notjson"], 1, ["`--column_mapping`", "JSON"]),
    (["score", *S, "--rule", "toy_rule.json", "--column_mapping", '{"output": "answer"}'], 1, ["--column_mapping"]),
    (["score", *S, "--rule", "toy_rule.json", "--format", "messages"], 1, ["`messages`", "columns"]),
    (["score", *S, "--indicators", "knn_6", "--reference", "missing.jsonl"], 1, ["`missing.jsonl`", "--reference"]),
    (["score", *S, "--rule", "toy_rule.json", "--column_mapping", '{"instruction": "question", "output": "answer"}'],
     1, ["['answer', 'question']", "not in the dataset", "'output'"]),
    # score: files that are not rows, not UTF-8, or cut short (`datasets`' own log lines must not show)
    (["score", "--dataset", "null.json", "--output", "o.jsonl"], 1, ["`null.json`", "`null`", "list of objects"]),
    (["score", "--dataset", "latenull.jsonl", "--output", "o.jsonl"], 1, ["`latenull.jsonl`", "line 3", "`null`"]),
    (["score", "--dataset", "latenull.json", "--output", "o.jsonl"], 1, ["`latenull.json`", "line 3", "`null`"]),
    (["score", "--dataset", "truncated.jsonl", "--output", "o.jsonl"], 1, ["`truncated.jsonl`", "line 4"]),
    (["score", "--dataset", "latin1.jsonl", "--output", "o.jsonl"], 1, ["`latin1.jsonl`", "not UTF-8", "iconv"]),
    (["score", "--dataset", "latin1.csv", "--output", "o.jsonl"], 1, ["`latin1.csv`", "line 2", "not UTF-8"]),
    (["score", *S, "--split", "test"], 1, ["`good.jsonl`", "no `test` split", "leave out `--split`"]),
    (["score", "--dataset", "openquote.csv", "--output", "o.jsonl"], 1, ["`openquote.csv`", "EOF inside string", "quoting"]),
    # score: preconditions checked before any model loads (a KNN over 4 rows cannot find a 6th neighbour)
    (["score", "--dataset", "four.jsonl", "--output", "o.jsonl", "--indicators", "knn_6"], 1,
     ["`knn_6`", "4 rows", "at least 7", "`--reference`"]),
    (["score", *S, "--indicators", "knn_6", "--reference", "four.jsonl"], 1,
     ["`knn_6`", "`--reference`, which has 4 rows", "at least 6"]),
    # score: flags and output
    (["score", *S, "--format", "bogus"], 2, ["--format", "invalid choice", "--help"]),
    (["score", *S, "--on_invalid", "skip"], 2, ["--on_invalid", "invalid choice"]),
    (["score", "--dataset", "good.jsonl"], 2, ["--output", "required"]),
    (["score", *S, "--max_rows", "0"], 1, ["`--max_rows`", "at least 1"]),
    (["score", *S, "--max_rows", "abc"], 2, ["--max_rows", "invalid int"]),
    (["score", *S, "--rules", "toy_rule.json"], 2, ["`--rules`", "did you mean `--rule`"]),
    (["score", *S, "--indicators"], 2, ["--indicators", "expected one argument"]),
    (["score", *S, "--device", "bogus"], 1, ["`--device bogus`", "cpu"]),
    (["score", *S, "--device", "cuda:x"], 1, ["`--device cuda:x`"]),
    (["score", "--dataset", "good.jsonl", "--output", "o.txt"], 1, ["`o.txt`", "--output", ".parquet"]),
    (
        ["score", "--dataset", "good.jsonl", "--output", "good.jsonl/o.jsonl", "--rule", "toy_rule.json"],
        1,
        ["good.jsonl/o.jsonl", "--output"],
    ),
    # score: config files
    (["score", "--config", "missing.yaml"], 1, ["`missing.yaml`", "--config"]),
    (["score", "--config", "unknown.yaml"], 1, ["['bogus_key']", "--config"]),
    (["score", "--config", "broken.yaml"], 1, ["`--config broken.yaml`", "YAML", "line 2"]),
    (["score", "--config", "list.yaml"], 1, ["`--config list.yaml`", "mapping"]),
    (["score", "--config"], 2, ["--config"]),
    # select
    (["select", *SEL, "--top_k", "0"], 1, ["`--top_k`", "at least 1"]),
    (["select", *SEL, "--top_k", "-1"], 1, ["`--top_k`", "at least 1"]),
    (["select", *SEL, "--fraction", "0"], 1, ["`--fraction`", "(0, 1]"]),
    (["select", *SEL, "--fraction", "1.5"], 1, ["`--fraction`", "(0, 1]"]),
    (["select", *SEL, "--fraction", "0.01"], 1, ["`--fraction 0.01`", "keeps no row", "at least"]),
    (["select", *SEL, "--threshold", "-5"], 1, ["`--threshold -5.0`", "best (lowest) score"]),
    (["select", *SEL, "--threshold", "nan"], 1, ["`--threshold`", "finite"]),
    (["select", *SEL, "--top_k", "3", "--fraction", "0.1"], 1, ["exactly one", "--top_k", "--fraction"]),
    (["select", *SEL], 1, ["exactly one", "got none"]),
    (["select", *SEL, "--top_k", "abc"], 2, ["--top_k", "invalid int"]),
    (["select", *SEL, "--topk", "3"], 2, ["`--topk`", "did you mean `--top_k`"]),
    (
        ["select", "--dataset", "good.jsonl", "--output", "o.jsonl", "--top_k", "3"],
        1,
        ["`good.jsonl`", "no `instruct_score`", "instructmining score"],
    ),
    (["select", *SEL, "--top_k", "3", "--score_column", "nope"], 1, ["no `nope` column", "--score_column"]),
    (["select", "--dataset", "nan_scored.parquet", "--output", "o.jsonl", "--top_k", "3"], 1, ["NaN", "nothing"]),
    (["select", "--dataset", "scored.parquet", "--output", "o.txt", "--top_k", "3"], 1, ["`o.txt`", "--output"]),
    (["select", "--dataset", "empty.jsonl", "--output", "o.jsonl", "--top_k", "3"], 1, ["`empty.jsonl`", "empty"]),
    # push
    (
        ["push", *PUSH, "--rule", "instructmining-llama-7b", "--folder", "f"],
        1,
        ["`instructmining-llama-7b`", "`toy`", "--rescore", "leave `--rule` out"],
    ),
    (
        ["push", "--dataset", "scored.jsonl", "--rule", "other_rule.json", "--folder", "f"],
        1,
        ["`other`", "formula gives other scores", "--rescore"],
    ),
    (
        ["push", "--dataset", "scored.jsonl", "--rule", "instructmining-llama-7b", "--folder", "f"],
        1,
        ["`reward`", "`knn_6`", "--rescore"],
    ),
    (["push", *PUSH], 1, ["exactly one of `--repo_id`", "`--folder`"]),
    (["push", *PUSH, "--folder", "f", "--repo_id", "me/x"], 1, ["exactly one of `--repo_id`"]),
    (["push", *PUSH, "--repo_id", "not a repo"], 1, ["`--repo_id not a repo`", "owner/name"]),
    (["push", *PUSH, "--folder", "f", "--search", "missing.json"], 1, ["`missing.json`", "--search"]),
    (["push", *PUSH, "--folder", "f", "--search", "badsearch.json"], 1, ["`badsearch.json`", "--search"]),
    (["push", *PUSH, "--folder", "f", "--search", "listsearch.json"], 1, ["`listsearch.json`", "JSON list"]),
    (["push", "--dataset", "good.jsonl", "--folder", "f"], 1, ["no `instruct_score`", "instructmining score"]),
    (["push", *PUSH, "--folder", "f", "--top_k", "0"], 1, ["`--top_k`", "at least 1"]),
    (["push", *PUSH, "--folder", "f", "--threshold", "-5"], 1, ["`--threshold -5.0`"]),
    (
        ["push", *PUSH, "--folder", "f", "--rule", "instructmining-lama-7b"],
        1,
        ["did you mean `instructmining-llama-7b`"],
    ),
    (["push", *PUSH, "--folder", "f", "--rescore"], 1, ["`--rescore`", "`--rule`"]),
    (["push", *PUSH, "--repo_id", "me/x"], 1, ["`me/x`", "complete"]),
    (["push", *PUSH, "--folder", "good.jsonl"], 1, ["`--folder good.jsonl`", "is a file", "name a folder"]),
    # fit
    (
        ["fit", "--store", "missing.jsonl", "--output", "r.json"],
        1,
        ["`missing.jsonl`", "--store", "instructmining label"],
    ),
    (["fit", "--store", "emptystore.jsonl", "--output", "r.json"], 1, ["`emptystore.jsonl`", "no finished subsets"]),
    (["fit", "--store", "emptystore.jsonl"], 1, ["`--output`", "required"]),
    (["fit", "--output", "r.json"], 1, ["`--store`", "required"]),
    (["fit", "--store", "emptystore.jsonl", "--output", "r.json", "--selection", "bogus"], 2, ["--selection"]),
    # label
    (["label", "--dataset", "scored.parquet", *TRAIN[2:]], 1, ["`--store`", "required"]),
    (
        ["label", "--dataset", "scored.parquet", "--store", "l.jsonl", "--eval_dataset", "good.jsonl"],
        1,
        ["`--model_name_or_path`", "required"],
    ),
    (["label", "--dataset", "scored.parquet", *TRAIN[:-1], "missing.jsonl"], 1, ["`missing.jsonl`", "--eval_dataset"]),
    (["label", "--dataset", "scored.parquet", *TRAIN, "--source_column", "nope"], 1, ["`nope`"]),
    (["label", "--dataset", "scored.parquet", *TRAIN, "--n_subsets", "0"], 1, ["`--n_subsets`", "at least 1"]),
    (["label", "--dataset", "scored.parquet", *TRAIN, "--subset_size", "100"], 1, ["`--subset_size 100`", "12 rows"]),
    (["label", "--dataset", "scored.parquet", *TRAIN, "--device", "bogus"], 1, ["`--device bogus`"]),
    (["label", "--dataset", "scored.parquet", *TRAIN, "--subset_size", "4", "--one_per", "topic"], 1, ["`--one_per topic`", "no column"]),
    (
        ["label", "--dataset", "scored.parquet", *TRAIN[:3], "nowhere/model", *TRAIN[4:], "--subset_size", "4"],
        1,
        ["`--model_name_or_path nowhere/model`", "local model folder"],
    ),
    # search
    (["search", "--dataset", "scored.parquet", *SEARCH, "--low", "10", "--high", "5"], 1, ["`--high`", "`--low`"]),
    (["search", "--dataset", "scored.parquet", *SEARCH, "--low", "0"], 1, ["`--low`", "at least 1"]),
    (["search", "--dataset", "scored.parquet", *SEARCH[:-2]], 1, ["`--output_dir`", "required"]),
    (["search", "--dataset", "good.jsonl", *SEARCH], 1, ["no `instruct_score`", "instructmining score"]),
    # demo
    (["demo", "--dataset", "missing.jsonl"], 1, ["`missing.jsonl`", "--dataset"]),
    (["demo", "--fraction", "0"], 1, ["`--fraction`", "(0, 1]"]),
    (["demo", "--fraction", "2"], 1, ["`--fraction`", "(0, 1]"]),
    (["demo", "--device", "bogus"], 1, ["`--device bogus`"]),
    (["demo", "--max_rows", "0"], 1, ["`--max_rows`"]),
    (["demo", "--max_rows", "6"], 1, ["`knn_6`", "at least 7 rows", "`--max_rows 6` leaves 6 rows"]),
    # score --group_by: checked before any model loads (the default rule's UniEval cannot load offline)
    (["score", *S, "--group_by", "generator"], 1, ["`--group_by generator`", "no column", "'style'"]),
    # explain
    (["explain"], 1, ["`--rule`", "`--dataset`"]),
    (["explain", "--rule", "instructmining-llama2-7"], 1, ["did you mean `instructmining-llama2-7b`"]),
    (["explain", "--rule", "missing_rule.json"], 1, ["`missing_rule.json`", "built-in rules"]),
    (["explain", "--rule", "toy_rule.json", "--group_by", "style"], 1, ["`--group_by style`", "`--dataset`"]),
    (["explain", "--dataset", "good.jsonl"], 1, ["`--dataset good.jsonl`", "records no rule", "`--rule`"]),
    (["explain", "--dataset", "scored.jsonl"], 1, ["`--dataset scored.jsonl`", "records no rule", "JSON Lines"]),
    (["explain", "--dataset", "scored.parquet", "--group_by", "nope"], 1, ["`--group_by nope`", "no column"]),
    (["explain", "--dataset", "scored.parquet", "--rule", "other_rule.json"], 1, ["`other`", "`toy`"]),
    (["explain", "--dataset", "missing.jsonl"], 1, ["`missing.jsonl`", "--dataset"]),
    (["explain", "--rules", "toy_rule.json"], 2, ["`--rules`", "did you mean `--rule`"]),
    # the command itself
    (["rank"], 2, ["unknown command `rank`", "score"]),
    (["scroe", "--dataset", "good.jsonl"], 2, ["unknown command `scroe`", "did you mean `score`"]),
]
# fmt: on


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_with_the_fix(run, tiny_llama_dir, args, code, says):
    args = [a.replace("{tiny_llama}", tiny_llama_dir) for a in args]
    exit_code, _, err = run(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"instructmining {args[0]}: error:" if args[0] in COMMANDS else "instructmining:"), err
    for text in says:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err


def test_at_least_sixty_bad_inputs_across_every_command():
    assert len(CASES) >= 60
    assert {args[0] for args, _, _ in CASES} >= {"score", "select", "push", "fit", "label", "search", "demo"}


def test_push_warns_once_when_the_data_records_no_rule(run):
    # A JSON Lines copy drops the record of the rule: nothing can check the scores, so the user is told, once.
    code, _, err = run("push", "--dataset", "scored.jsonl", "--folder", "from-copy")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 0 and len(lines) == 1, err
    assert "`scored.jsonl` records no rule" in lines[0] and "`--rule`" in lines[0]
    code, _, err = run("push", "--dataset", "scored.parquet", "--folder", "from-parquet")
    assert code == 0 and "records no rule" not in err
    code, _, err = run("push", "--dataset", "scored.jsonl", "--rule", "toy_rule.json", "--folder", "from-copy-ruled")
    assert code == 0 and "records no rule" not in err


def test_an_unexpected_error_is_one_line_asking_for_a_report(run, monkeypatch):
    from hf_instructmining.cli import select_

    def broken(*args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(select_, "select_rows", broken)
    code, _, err = run("select", *SEL, "--top_k", "3")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unexpected ZeroDivisionError: boom" in err and "INSTRUCTMINING_DEBUG=1" in err


def test_debug_shows_the_traceback(run, monkeypatch):
    monkeypatch.setenv("INSTRUCTMINING_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        run("score", "--dataset", "missing.jsonl", "--output", "o.jsonl")


def test_python_arguments_become_flags_only_where_the_command_has_them():
    error = ValueError("pass `column_mapping=`, `on_invalid=\"nan\"` or `device='cpu'`; `format=x`\n  and `k=3`")
    assert describe(error, ["column_mapping", "on_invalid", "device", "format"]) == (
        "pass `--column_mapping`, `--on_invalid nan` or `--device cpu`; `--format x` and `k=3`"
    )
    assert describe(KeyError("the rule needs `reward`"), []) == "the rule needs `reward`"
