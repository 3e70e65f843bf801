"""Kept for `from hf_instructmining.summary import summarize_dataset`: the module now lives in `scoring/summary.py`."""

from .scoring.summary import DatasetSummary, IndicatorStats, summarize_dataset


__all__ = ["DatasetSummary", "IndicatorStats", "summarize_dataset"]
