"""The subset-size search: how many of the best-scored rows to keep (paper, Section 5.2).

- `config.py`: [`SearchConfig`], how the search searches.
- `api.py`: [`search_subset_size`], the search itself and the finetuning trial it runs by default.
- `strategy.py`: the searchers (the bracketing search, FLAML's BlendSearch) over the grid of sizes.
- `trials.py`: the trial loop, and the history that persists trials so a stopped search resumes.
- `result.py`: [`SearchResult`], read and drawn without FLAML or a finetuning stack.
"""

from .api import search_subset_size
from .config import SearchConfig
from .result import SearchResult


__all__ = ["SearchConfig", "SearchResult", "search_subset_size"]
