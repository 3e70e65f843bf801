"""A dataset card's "How to reproduce" is the code that made the data: run from the rendered card, it gives the same
scores and the same selection."""

import re

import pytest
from datasets import Dataset

from hf_instructmining import QualityRule, compute_indicators, save_scored, select_fraction, select_top_k
from hf_instructmining.scoring.provenance import read


QUESTIONS = [
    "Give three tips for staying healthy.",
    "Translate good morning into French.",
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Explain photosynthesis to a child.",
    "List the primary colors.",
    "Say hello to the user.",
    "Count from one to five.",
]
ANSWERS = [
    "Eat a balanced diet, exercise regularly and sleep well.",
    "Bonjour.",
    "Waves fold on the shore, the wind carries salt and light, the sea keeps its time.",
    "The capital of France is Paris.",
    "Plants turn sunlight, water and air into sugar and oxygen.",
    "Red, blue and yellow.",
    "Hi, how can I help you today?",
    "One, two, three, four, five.",
]


def recipe_of(card: str) -> str:
    """The Python block under "How to reproduce"."""
    section = card[card.index("## How to reproduce") :]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def run_recipe(code: str, data: Dataset, folder) -> dict:
    """Execute the card's recipe as a reader would, with the scored data in place of its `ds = ...` placeholder and
    the card's folder in place of the repo id (a local save has no repo yet)."""
    assert "ds = ...  # the data that was scored" in code
    code = code.replace("ds = ...  # the data that was scored", "ds = DATA").replace("<repo_id>", str(folder))
    namespace = {"DATA": data}
    exec(compile(code, "card recipe", "exec"), namespace)  # noqa: S102 - the card's own code, as a reader runs it
    return namespace


@pytest.fixture
def rows() -> Dataset:
    # 24 rows: 8 pairs, 8 other answers to the same questions, and the first 8 pairs again (exact duplicates), so
    # that deduplication changes which rows a fraction keeps.
    instructions = QUESTIONS * 3
    outputs = [*ANSWERS, *(f"{a} {ANSWERS[(i + 3) % 8]}" for i, a in enumerate(ANSWERS)), *ANSWERS]
    return Dataset.from_dict({"instruction": instructions, "output": outputs})


def test_the_recipe_of_a_knn_rule_reproduces_scores_and_deduplicated_selection(
    tmp_path, rows, tiny_bert_dir, tiny_llama_dir
):
    # As the demo does: the rule names Hub ids, the call points them at local folders (here tiny models).
    rule = QualityRule(
        0.5,
        {"knn_6": 0.2, "perplexity": 0.001, "mtld": -0.002},
        {"knn_6": {"model": "sentence-transformers/all-MiniLM-L6-v2"}, "perplexity": {"model": "gpt2"}, "mtld": {}},
        name="tiny-knn",
    )
    models = {"knn": tiny_bert_dir, "perplexity": tiny_llama_dir, "output_length": tiny_llama_dir}
    with pytest.warns(UserWarning, match="fitted with indicators from other models"):
        scored = compute_indicators(rows, ["output_length"], rule=rule, models=models)
    selected = select_fraction(scored, 0.5, deduplicate=True)
    # Without deduplication the same fraction keeps other rows: a recipe that drops the option picks another set.
    assert list(select_fraction(scored, 0.5)["row_index"]) != list(selected["row_index"])
    folder = tmp_path / "card"
    save_scored(scored, folder, rule=rule, selection=selected)

    code = recipe_of((folder / "README.md").read_text())
    assert "InstructScorer" not in code  # one `map` batch cannot define a KNN neighbour set
    assert "select_fraction(scored, 0.5, deduplicate=True)" in code
    with pytest.warns(UserWarning, match="fitted with indicators from other models"):  # the same models again
        made = run_recipe(code, rows, folder)

    assert made["scored"]["instruct_score"][:] == pytest.approx(scored["instruct_score"][:], rel=1e-6)
    assert made["scored"]["output_length"][:] == scored["output_length"][:]
    assert list(made["selected"]["row_index"]) == list(selected["row_index"])


def test_a_chained_selection_is_replayed_in_order(tmp_path, rows):
    rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="toy")
    scored = compute_indicators(rows, rule=rule, on_invalid="nan")
    selected = select_top_k(select_fraction(scored, 0.75, deduplicate=True), 5)
    assert [c["function"] for c in read(selected).selection] == ["select_fraction", "select_top_k"]
    folder = tmp_path / "card"
    save_scored(scored, folder, rule=rule, selection=selected)

    code = recipe_of((folder / "README.md").read_text())
    assert 'scored = compute_indicators(ds, rule=rule, on_invalid="nan")' in code
    made = run_recipe(code, rows, folder)
    assert list(made["selected"]["row_index"]) == list(selected["row_index"])


def test_a_selection_the_recorded_calls_do_not_give_is_not_presented_as_made_by_them(tmp_path, rows):
    rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="toy")
    scored = compute_indicators(rows, rule=rule)
    # Selected from the first half only: the recorded call, replayed on every scored row, picks other rows.
    selected = select_top_k(scored.select(range(12)), 4)
    folder = tmp_path / "card"
    save_scored(scored, folder, rule=rule, selection=selected)
    code = recipe_of((folder / "README.md").read_text())
    assert "select_top_k" not in code and "was not recorded" in code


def test_scores_made_without_a_record_get_a_recipe_that_still_runs(tmp_path, rows):
    from hf_instructmining import InstructScorer

    rule = QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}}, name="toy")
    scored = rows.map(InstructScorer(rule=rule), batched=True)  # `map` records nothing on the columns
    folder = tmp_path / "card"
    save_scored(scored, folder, rule=rule, selection=select_top_k(scored, 3))
    code = recipe_of((folder / "README.md").read_text())
    assert "was not recorded" in code and "scored = compute_indicators(ds, rule=rule)" in code
    made = run_recipe(code, rows, folder)
    assert made["scored"]["instruct_score"][:] == pytest.approx(scored["instruct_score"][:], rel=1e-9)
    assert list(made["selected"]["row_index"]) == list(select_top_k(scored, 3)["row_index"])


@pytest.mark.slow
def test_the_demo_cards_recipe_reproduces_the_demo(tmp_path):
    from datasets import load_dataset

    from hf_instructmining.cli import main
    from hf_instructmining.offline import example_data_path

    folder = tmp_path / "demo"
    assert main(["demo", "--max_rows", "20", "--output_dir", str(folder)]) == 0
    code = recipe_of((folder / "README.md").read_text())
    assert "select_fraction(scored, 0.3, deduplicate=True)" in code and "HF_HUB_OFFLINE=1" in code
    data = load_dataset("json", data_files=example_data_path(), split="train").select(range(20))
    made = run_recipe(code, data, folder)

    scored = Dataset.from_parquet(str(next((folder / "scored").glob("*.parquet"))))
    selected = Dataset.from_parquet(str(next((folder / "selected").glob("*.parquet"))))
    assert made["scored"]["instruct_score"][:] == pytest.approx(scored["instruct_score"][:], rel=1e-6)
    assert list(made["selected"]["row_index"]) == list(selected["row_index"])
