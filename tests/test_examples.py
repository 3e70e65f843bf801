"""Every script in `examples/` runs, offline, with small settings (tiny models stand in for large ones)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_instructmining.offline import example_data_path


ROOT = Path(__file__).resolve().parents[1]
DATA = Path(example_data_path())
pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_score_and_select(tmp_path, tiny_oa_reward_dir, tiny_t5_dir):
    out = run_example(
        "score_and_select.py",
        "--dataset", str(DATA), "--reward-model", tiny_oa_reward_dir, "--unieval-model", tiny_t5_dir,
        "--top-k", "20", "--output", "top.jsonl",
        cwd=tmp_path,
    )  # fmt: skip
    assert "rows scored" in out and "kept the 20 best rows" in out
    rows = [json.loads(line) for line in (tmp_path / "top.jsonl").read_text().splitlines()]
    scores = [r["instruct_score"] for r in rows]
    assert len(rows) == 20 and scores == sorted(scores)


def test_train_with_callback(tmp_path, tiny_llama_dir):
    out = run_example(
        "train_with_callback.py", "--model", tiny_llama_dir, "--data", str(DATA), "--max-steps", "2",
        "--store", "labels.jsonl", cwd=tmp_path,
    )  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and evals[-1]["metric"] == "eval_loss" and evals[-1]["subset_id"] == "my-training-run", out


def test_train_with_callback_pushes_the_model_with_its_card(tmp_path, tiny_llama_dir, fake_hub):
    from huggingface_hub import ModelCard

    out = run_example(
        "train_with_callback.py", "--model", tiny_llama_dir, "--data", str(DATA), "--max-steps", "1",
        "--store", "labels.jsonl", "--push-to-hub", "me/tiny-selected", "--dataset-repo", "me/selected-data",
        "--rule", "instructmining-llama2-7b", cwd=tmp_path, env={**fake_hub.env, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_example_token"},
    )  # fmt: skip
    assert "pushed the adapter" in out
    card = ModelCard.load("me/tiny-selected")
    assert card.data.datasets == ["me/selected-data"] and "instructmining" in card.text


def test_fit_rule_end_to_end(tmp_path, tiny_llama_dir):
    args = [
        "--model", tiny_llama_dir, "--data", str(DATA), "--n-subsets", "5", "--subset-size", "8",
        "--eval-size", "4", "--max-steps", "1", "--max-length", "64", "--workdir", "fit",
    ]  # fmt: skip
    out = run_example("fit_rule_end_to_end.py", *args, cwd=tmp_path)
    assert "R" in out and (tmp_path / "fit" / "rule.json").is_file()
    first = json.loads((tmp_path / "fit" / "rule.json").read_text())
    run_example("fit_rule_end_to_end.py", *args, cwd=tmp_path)  # resumes from the store: same rule
    again = json.loads((tmp_path / "fit" / "rule.json").read_text())
    assert again["coefficients"] == first["coefficients"]


def test_search_and_push_to_a_folder(tmp_path, tiny_llama_dir):
    # 80 rows: the offline rule's indicators run the real SmolLM2 twice over every row, the slow part on a CPU.
    data = tmp_path / "data.jsonl"
    data.write_text("".join(DATA.read_text().splitlines(keepends=True)[:80]))
    out = run_example(
        "search_and_push.py", "--data", str(data), "--model", tiny_llama_dir, "--num-samples", "2",
        "--max-steps", "1", "--max-length", "64", "--folder", "published", cwd=tmp_path,
    )  # fmt: skip
    assert "best k =" in out
    folder = tmp_path / "published"
    assert (folder / "README.md").is_file() and (folder / "instructmining_search.json").is_file()
    assert any((folder / "images").glob("*search*.png"))
