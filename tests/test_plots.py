"""The card pictures: valid PNGs, NaN-tolerant, byte-identical for the same data, and no pyplot state touched."""

import math
import sys

import pytest

from hf_instructmining.plots import indicator_correlations, score_histogram


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


def test_plots_leave_pyplot_alone(tmp_path):
    score_histogram([0.1, 0.2], tmp_path / "h.png")
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
