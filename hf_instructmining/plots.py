"""Pictures for dataset cards and reports: the score histogram, and how the indicators relate to the score.

With a few indicators, one scatter panel per indicator against the score shows what the rule rewards; with
many, a correlation heatmap of the indicators and the score does ([`FEW_INDICATORS`] is the switch).

matplotlib is imported inside each function and drawn through its Agg canvas directly (no `pyplot`, so the
caller's backend and global figure state are left alone). PNGs carry no software or date metadata, so the same
data always gives the same bytes and re-publishing an unchanged dataset uploads nothing.
"""

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from .import_utils import require


logger = logging.getLogger(__name__)

#: Up to this many indicator columns, cards draw [`indicators_against_score`]; beyond, [`indicator_correlations`].
FEW_INDICATORS = 3


def _figure(width: float, height: float):
    require("matplotlib", "hf_instructmining.plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def score_histogram(
    scores: Sequence[float],
    path: str | os.PathLike,
    *,
    selected: Sequence[float] | None = None,
    bins: int = 40,
    label: str = "instruct_score (predicted log eval loss, lower is better)",
) -> str:
    """Draw the distribution of scores, with the selected rows' scores overlaid when given.

    Args:
        scores (`Sequence[float]`): every row's score; NaN scores (invalid rows) are left out and counted in the legend.
        path (`str` or `os.PathLike`): where to write the PNG (folders are created).
        selected (`Sequence[float]`, *optional*): the selected rows' scores.
        bins (`int`, *optional*, defaults to `40`): number of bins over the range of all scores.
        label (`str`, *optional*): the x-axis label.

    Returns:
        `str`: the PNG's path.

    Example:

    ```py
    >>> import os, tempfile
    >>> from hf_instructmining.plots import score_histogram
    >>> path = score_histogram([0.1, 0.4, 0.2, 0.9], os.path.join(tempfile.mkdtemp(), "h.png"), selected=[0.1, 0.2])
    >>> path.endswith("h.png") and os.path.getsize(path) > 0
    True
    ```
    """
    values = np.asarray(scores, dtype=float)
    finite = values[np.isfinite(values)]
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    edges = np.histogram_bin_edges(finite, bins=bins) if finite.size else bins
    missing = values.size - finite.size
    all_label = f"all rows (n={finite.size}" + (f", {missing} without a score)" if missing else ")")
    axes.hist(finite, bins=edges, color="#9aa5b1", label=all_label)
    if selected is not None:
        chosen = np.asarray(selected, dtype=float)
        chosen = chosen[np.isfinite(chosen)]
        axes.hist(chosen, bins=edges, color="#2f6fde", alpha=0.85, label=f"selected (n={chosen.size})")
    axes.yaxis.get_major_locator().set_params(integer=True)  # row counts
    axes.set_xlabel(label)
    axes.set_ylabel("rows")
    axes.legend(frameon=False)
    return _save(figure, path)


def indicator_correlations(columns: Mapping[str, Sequence[float]], path: str | os.PathLike) -> str:
    """Draw the Pearson correlation matrix of indicator columns as an annotated heatmap.

    Rows with a NaN in any column are left out. A constant column has no defined correlation: its cells are blank and
    its label says `(constant)` (e.g. an indicator that a rule clipped to the same value on every row).

    Args:
        columns (`Mapping[str, Sequence[float]]`): indicator column -> values (a `pandas.DataFrame` works too).
        path (`str` or `os.PathLike`): where to write the PNG.

    Returns:
        `str`: the PNG's path.

    Example:

    ```py
    >>> import os, tempfile
    >>> from hf_instructmining.plots import indicator_correlations
    >>> cols = {"mtld": [50.0, 20.0, 35.0], "output_length": [120, 30, 80], "reward": [1.2, -0.3, 0.4]}
    >>> os.path.getsize(indicator_correlations(cols, os.path.join(tempfile.mkdtemp(), "c.png"))) > 0
    True
    ```
    """
    names = list(columns)
    if not names:
        raise ValueError("`columns` is empty: give at least one indicator column to correlate.")
    matrix = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
    matrix = matrix[np.isfinite(matrix).all(axis=1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(matrix, rowvar=False) if len(matrix) > 1 else np.full((len(names), len(names)), np.nan)
    corr = np.atleast_2d(corr)
    side = 1.2 + 0.9 * len(names)
    figure = _figure(side + 1.4, side)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(corr), cmap="coolwarm", vmin=-1, vmax=1)
    constant = np.ptp(matrix, axis=0) == 0 if len(matrix) > 1 else np.zeros(len(names), dtype=bool)
    labels = [f"{name} (constant)" if constant[i] else name for i, name in enumerate(names)]
    axes.set_xticks(range(len(names)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), labels)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(corr[i, j]):
                axes.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axes, label="Pearson r")
    axes.set_title(f"indicator correlations (n={len(matrix)})")
    return _save(figure, path)


def indicators_against_score(
    columns: Mapping[str, Sequence[float]],
    scores: Sequence[float],
    path: str | os.PathLike,
    *,
    score_label: str = "instruct_score (lower is better)",
    max_points: int = 5000,
) -> str:
    """Draw each indicator against the score, one scatter panel per indicator, titled with their Pearson r.

    Rows with a NaN indicator or score are left out of that panel. Beyond `max_points` rows, a fixed random sample
    is drawn (r still uses every row).

    Args:
        columns (`Mapping[str, Sequence[float]]`): indicator column -> values.
        scores (`Sequence[float]`): the score of each row.
        path (`str` or `os.PathLike`): where to write the PNG.
        score_label (`str`, *optional*): the y-axis label.
        max_points (`int`, *optional*, defaults to `5000`): most points drawn per panel.

    Returns:
        `str`: the PNG's path.

    Example:

    ```py
    >>> import os, tempfile
    >>> from hf_instructmining.plots import indicators_against_score
    >>> cols = {"mtld": [50.0, 20.0, 35.0], "output_length": [120, 30, 80]}
    >>> os.path.getsize(indicators_against_score(cols, [0.2, 0.5, 0.3], os.path.join(tempfile.mkdtemp(), "s.png"))) > 0
    True
    ```
    """
    names = list(columns)
    if not names:
        raise ValueError("`columns` is empty: give at least one indicator column to draw against the score.")
    y_all = np.asarray(scores, dtype=float)
    figure = _figure(max(5.2, 0.6 + 3.2 * len(names)), 3.4)  # wide enough for the title with one panel
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1, sharey=figure.axes[0] if i else None)
        x = np.asarray(columns[name], dtype=float)
        keep = np.isfinite(x) & np.isfinite(y_all)
        x, y = x[keep], y_all[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(x, y)[0, 1] if x.size > 1 else np.nan
        shown = rng.choice(x.size, max_points, replace=False) if x.size > max_points else slice(None)
        axes.scatter(x[shown], y[shown], s=8, alpha=0.5, color="#2f6fde", linewidths=0)
        axes.set_xlabel(name)
        constant = x.size > 1 and np.ptp(x) == 0
        axes.set_title(
            f"r = {r:.2f}" if np.isfinite(r) else f"r undefined{' (constant)' if constant else ''}", fontsize=10
        )
        if i == 0:
            axes.set_ylabel(score_label)
        else:
            axes.tick_params(labelleft=False)
    sample = f", {max_points} drawn" if y_all.size > max_points else ""
    figure.suptitle(f"indicators against the score (n={y_all.size}{sample})", fontsize=11)
    return _save(figure, path)
