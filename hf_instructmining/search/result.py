"""The outcome of a subset-size search: the best size, every trial behind it, and the data-size curve as a picture.

Kept apart from the search itself so that reading a saved trace (`instructmining_search.json`) or drawing it for a
dataset card needs neither FLAML nor a finetuning stack.
"""

import dataclasses
import os
from dataclasses import dataclass

from ..import_utils import require


SELECTIONS = ("rule", "random")


@dataclass
class SearchResult:
    """The outcome of [`search_subset_size`]: the best size and every trial behind it.

    Args:
        best_k (`int`): the rule-selected size with the lowest loss.
        best_loss (`float`): its loss.
        trace (`list[dict]`): every trial in the order it ran, each with `trial`, `k`, `loss`, `time_s` and
            `selection` (`"rule"` for the top k by score, `"random"` for k random rows).
        search_id (`str`, *optional*): the search's name in the store.
        low (`int`, *optional*): the smallest size searched.
        high (`int`, *optional*): the largest size searched.
        log_scale (`bool`, *optional*, defaults to `True`): whether k was searched on a log scale.
        method (`str`, *optional*): the searcher (`SearchConfig.method`: `"bracket"` or `"blendsearch"`).

    Example:

    ```py
    >>> from hf_instructmining import SearchResult
    >>> result = SearchResult(best_k=20, best_loss=0.9, trace=[
    ...     {"trial": 1, "k": 10, "loss": 1.2, "time_s": 1.0, "selection": "rule"},
    ...     {"trial": 2, "k": 20, "loss": 0.9, "time_s": 2.0, "selection": "rule"}])
    >>> result.curve()
    [(10, 1.2), (20, 0.9)]
    >>> SearchResult.from_dict(result.to_dict()) == result
    True
    ```
    """

    best_k: int
    best_loss: float
    trace: list[dict]
    search_id: str | None = None
    low: int | None = None
    high: int | None = None
    log_scale: bool = True
    method: str | None = None

    def curve(self, selection: str = "rule") -> list[tuple[int, float]]:
        """The (k, loss) points of one selection kind, sorted by k."""
        if selection not in SELECTIONS:
            raise ValueError(f"`selection` must be one of {SELECTIONS}, got `{selection!r}`.")
        return sorted((t["k"], t["loss"]) for t in self.trace if t["selection"] == selection)

    def to_dict(self) -> dict:
        """A JSON-safe dict; [`SearchResult.from_dict`] reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchResult":
        """Rebuild a result from [`SearchResult.to_dict`]'s output."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> str:
        """Write a PNG of eval loss against k, rule-selected and random rows, with the best size marked.

        Args:
            path (`str` or `os.PathLike`): the PNG file to write.
            title (`str`, *optional*): the figure title.

        Returns:
            `str`: the path written.
        """
        require("matplotlib", "SearchResult.plot")
        # The object-oriented API with the Agg canvas: no pyplot, so the caller's backend and figures are untouched.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogFormatter

        figure = Figure(figsize=(6, 4), dpi=120)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for selection, label, style in (
            ("rule", "top k by score", {"marker": "o", "color": "tab:blue"}),
            ("random", "k random rows", {"marker": "s", "color": "tab:gray", "linestyle": "--"}),
        ):
            points = self.curve(selection)
            if points:
                ax.plot(*zip(*points, strict=True), label=label, **style)
        ax.plot(
            [self.best_k],
            [self.best_loss],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"best k = {self.best_k:,}",
        )
        if self.log_scale:
            ax.set_xscale("log")
            # Plain numbers ("20", "2,000") rather than "2 x 10^1": the axis is a count of rows.
            plain = FuncFormatter(lambda value, _: f"{value:,.0f}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
        ax.set_xlabel("training rows kept (k)")
        ax.set_ylabel("eval loss")
        ax.set_title(title or "Eval loss against data size")
        ax.grid(True, alpha=0.3)
        ax.legend()
        figure.tight_layout()
        path = os.fspath(path)
        figure.savefig(path, format="png")
        return path
