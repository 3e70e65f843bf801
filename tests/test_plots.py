"""The card pictures: valid PNGs, NaN-tolerant, byte-identical for the same data, and no pyplot state touched."""

import math
import sys

import pytest

from hf_instructmining.plots import FEW_INDICATORS, indicator_correlations, indicators_against_score, score_histogram


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_score_histogram_is_a_png_and_deterministic(tmp_path):
    scores = [0.1 * i for i in range(30)] + [math.nan]
    first = score_histogram(scores, tmp_path / "a" / "h.png", selected=scores[:5])
    second = score_histogram(scores, tmp_path / "b.png", selected=scores[:5])
    assert read(first).startswith(PNG_MAGIC)
    assert read(first) == read(second)
    assert read(first) != read(score_histogram(scores, tmp_path / "c.png"))


def test_histogram_of_no_finite_scores_still_draws(tmp_path):
    assert read(score_histogram([math.nan, math.nan], tmp_path / "h.png")).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "columns",
    [
        {"mtld": [50.0, 20.0, 35.0, math.nan], "output_length": [120, 30, 80, 10], "reward": [1.2, -0.3, 0.4, 0.0]},
        {"constant": [1.0, 1.0, 1.0], "varying": [1.0, 2.0, 3.0]},
        {"one_row_a": [1.0], "one_row_b": [2.0]},
    ],
)
def test_indicator_correlations_handle_nan_constant_and_tiny_inputs(tmp_path, columns):
    assert read(indicator_correlations(columns, tmp_path / "c.png")).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("columns", "scores"),
    [
        ({"mtld": [50.0, 20.0, 35.0, math.nan], "output_length": [120, 30, 80, 10]}, [0.2, 0.5, 0.3, 0.4]),
        ({"constant": [1.0, 1.0, 1.0]}, [0.1, math.nan, 0.3]),
        ({"many": [float(i % 97) for i in range(20_000)]}, [i / 20_000 for i in range(20_000)]),
    ],
)
def test_indicators_against_score_handle_nan_constant_and_many_rows(tmp_path, columns, scores):
    first = indicators_against_score(columns, scores, tmp_path / "s.png", max_points=500)
    assert read(first).startswith(PNG_MAGIC)
    assert read(first) == read(indicators_against_score(columns, scores, tmp_path / "t.png", max_points=500))


def test_cards_draw_each_indicator_against_the_score_when_few_and_correlations_when_many():
    from datasets import Dataset

    from hf_instructmining.hub.cards import pictures

    names = ["mtld", "output_length", "input_length", "perplexity"]
    few = Dataset.from_dict({**{n: [1.0, 2.0] for n in names[:FEW_INDICATORS]}, "instruct_score": [0.1, 0.2]})
    many = Dataset.from_dict({**{n: [1.0, 2.0] for n in names}, "instruct_score": [0.1, 0.2]})
    assert set(pictures(few, None, None)) == {"score_histogram", "indicators_against_score"}
    assert set(pictures(many, None, None)) == {"score_histogram", "indicator_correlations"}
    assert set(pictures(few.select_columns(["instruct_score"]), None, None)) == {"score_histogram"}


def test_the_correlation_picture_includes_the_score(tmp_path, monkeypatch):
    from datasets import Dataset

    from hf_instructmining import plots, save_scored

    drawn = {}
    monkeypatch.setattr(plots, "indicator_correlations", lambda columns, path: drawn.update(columns) or path)
    names = ["mtld", "output_length", "input_length", "perplexity"]
    ds = Dataset.from_dict({**{n: [1.0, 2.0, 4.0] for n in names}, "instruct_score": [0.1, 0.2, 0.3]})
    save_scored(ds, tmp_path / "out")
    assert list(drawn) == [*names, "instruct_score"]


def test_plots_leave_pyplot_alone(tmp_path):
    score_histogram([0.1, 0.2], tmp_path / "h.png")
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
