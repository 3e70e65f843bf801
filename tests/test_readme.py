"""Every ```python block of README.md runs as written, in order, against the loopback fake Hub.

The blocks share one namespace, as a reader's session would (`scored` from one block is used by the next), in a
fresh folder. The Hub ids they name serve the tiny test models (the paper's reward model, UniEval, Llama-2 and
MiniLM) and a 30-row `tatsu-lab/alpaca`, so the calls are the README's own and fast. A block that starts with
`>>>` runs as a doctest, its printed output compared. A block that cannot run here (a fragment of a training
script, dozens of finetuning runs) sits right after an HTML comment `<!-- no-run: <why> -->` in the README.
"""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hf_instructmining.offline import example_data_path


README = Path(__file__).resolve().parents[1] / "README.md"
TOKEN = "hf_readmeSECRETtoken0123456789abcdef"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NO_RUN = re.compile(r"<!-- no-run: (\S[^\n]{9,}?) -->\s*\Z")


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """`(line, code, why not run)` for each ```python block; `why` is `None` for the blocks that run."""
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 2  # the first line of code
        no_run = _NO_RUN.search(text[: match.start()])
        blocks.append((line, match[1], no_run[1] if no_run else None))
    return blocks


def run_blocks(readme: str, folder: str) -> None:
    """Run the README's runnable blocks in `folder` (in a child process: the models they load stay there)."""
    os.chdir(folder)
    namespace: dict = {"__name__": "__readme__"}
    for line, code, why in readme_blocks(Path(readme).read_text(encoding="utf-8")):
        if why is not None:
            continue
        print(f"README.md line {line}", flush=True)  # noqa: T201 (what ran: the parent counts these lines)
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, f"README.md:{line}", "README.md", line)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            runner.run(test, clear_globs=False)
            if runner.failures:
                raise AssertionError(f"the doctest of README.md line {line} failed (its output is above)")
        else:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)


def test_blocks_that_do_not_run_say_why_and_stay_few():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    skipped = [(line, why) for line, _, why in blocks if why is not None]
    assert len(blocks) >= 8
    # the blocks that show calls on a user's own data run; those that need training runs or a script say so
    assert len(blocks) - len(skipped) >= 3, skipped


def test_readme_python_blocks_run_as_written(
    fake_hub, tmp_path, tiny_oa_reward_dir, tiny_t5_dir, tiny_llama_dir, tiny_classifier_dir, tiny_bert_dir
):
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    for repo_id, folder in {
        "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5": tiny_oa_reward_dir,
        "MingZhong/unieval-dialog": tiny_t5_dir,
        "meta-llama/Llama-2-7b-hf": tiny_llama_dir,
        "OpenAssistant/reward-model-deberta-v3-large-v2": tiny_classifier_dir,
        "sentence-transformers/all-MiniLM-L6-v2": tiny_bert_dir,
    }.items():
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder)
    Dataset.from_json(example_data_path()).select(range(30)).push_to_hub("tatsu-lab/alpaca", token=TOKEN)

    work = tmp_path / "reader"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from tests.test_readme import run_blocks; run_blocks({str(README)!r}, {str(work)!r})",
        ],
        cwd=README.parent,
        env={**os.environ, **fake_hub.env, "HF_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ran = [line for line in result.stdout.splitlines() if line.startswith("README.md line ")]
    assert len(ran) == sum(why is None for _, _, why in readme_blocks(README.read_text(encoding="utf-8"))), ran


def test_the_range_warning_reads_in_the_readme_as_the_command_prints_it(tmp_path, monkeypatch, capfd):
    # The README quotes the demo's warning that the data lies outside the rule's range: it must look as printed.
    import dataclasses
    import json

    from hf_instructmining import QualityRule
    from hf_instructmining.cli import main

    rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="ranged")
    (tmp_path / "rule.json").write_text(
        json.dumps(dataclasses.replace(rule, domain={"mtld": (500.0, 600.0)}).to_dict())
    )
    Dataset.from_json(example_data_path()).select(range(8)).to_json(str(tmp_path / "rows.jsonl"))
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert main(["score", "--dataset", "rows.jsonl", "--rule", "rule.json", "--output", "o.jsonl"]) == 0
    printed = [line for line in capfd.readouterr().err.splitlines() if "This dataset's mean" in line]
    quoted = [line for line in README.read_text(encoding="utf-8").splitlines() if "This dataset's mean" in line]
    assert len(printed) == 1 and quoted
    prefix = printed[0].split("This dataset's mean")[0]
    assert prefix == "WARNING py.warnings: UserWarning: "
    assert all(line.startswith(prefix) for line in quoted), quoted


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<!-- no-run: needs a GPU to be useful -->\n\n```python\nx = 1\n```\n", "needs a GPU to be useful"),
        ("<!-- no-run: short -->\n```python\nx = 1\n```\n", None),  # a reason says something
        ("<!-- no-run: needs a GPU to be useful -->\ntext\n```python\nx = 1\n```\n", None),  # only right before
    ],
)
def test_a_block_is_skipped_only_with_a_reason_right_before_it(text, why):
    assert [(code, reason) for _, code, reason in readme_blocks(text)] == [("x = 1\n", why)]
