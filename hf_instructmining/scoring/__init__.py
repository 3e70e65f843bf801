"""Scoring: indicators plus a rule's prediction, `ds.map(instruct_score)` and `compute_indicators(ds, names)`.

- `config.py`: [`ScoreConfig`], what to score with and where.
- `plan.py`: which indicators a rule needs, rebuilt from its specs with the caller's models and options.
- `steps.py`: the one plan -> compute -> predict path that every way of scoring runs.
- `scorer.py`: [`InstructScorer`] (a `map` function) and [`compute_indicators`] (a whole dataset).
- `checkpoint.py`, `shards.py`: resumable scoring (`checkpoint_dir=`): finished rows kept in atomic shards, a rerun
  computes only the missing ones.
- `summary.py`: [`summarize_dataset`], the rule applied to a dataset's mean indicators.
- `provenance.py`: how each score column was made, recorded in its feature and checked before publishing.
"""

from .config import SCORE_COLUMN, ScoreConfig
from .plan import resolve_rule
from .scorer import InstructScorer, compute_indicators
from .summary import DatasetSummary, IndicatorStats, summarize_dataset


__all__ = [
    "SCORE_COLUMN",
    "DatasetSummary",
    "IndicatorStats",
    "InstructScorer",
    "ScoreConfig",
    "compute_indicators",
    "instruct_score",
    "resolve_rule",
    "summarize_dataset",
]

#: The ready scorer for the default rule, built on first access (see [`InstructScorer`]).
instruct_score: InstructScorer


def __getattr__(name: str):
    # `instruct_score` is built on first access, so importing this package reads no rule and loads nothing.
    if name == "instruct_score":
        scorer = InstructScorer()
        globals()[name] = scorer
        return scorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
