"""Kept for `from hf_instructmining.search_result import SearchResult`: the module now lives in `search/result.py`."""

from .search.result import SearchResult


__all__ = ["SearchResult"]
