"""`SearchConfig`: how the subset-size search searches. Apart from the search so that the searchers and the trial
loop import it without importing the search."""

from dataclasses import dataclass, field


# The searchers `strategy.make_searcher` builds.
METHODS = ("bracket", "blendsearch")


@dataclass
class SearchConfig:
    """How [`search_subset_size`] searches over the subset size k.

    Args:
        method (`str`, *optional*, defaults to `"bracket"`):
            The searcher. `"bracket"`: a coarse sweep of `initial_sizes` sizes over the whole range (a
            coarse-to-fine grid shifted by the seed; on a wide range cheapest first, its dearest size last), the end
            of the range tried as soon as the loss falls steeply towards it, then the lowest local minima narrowed
            by parabolic interpolation, taking turns with bisecting the widest untried stretch once a minimum is
            narrow and flat. `"blendsearch"`: FLAML's BlendSearch, cost-aware (a trial
            costs its size), starting from `low` after `initial_sizes` log-spaced sizes. `benchmarks/bench_search.py`
            compares them with a grid and random search on five curve shapes, with and without evaluation noise.
        log_scale (`bool`, *optional*, defaults to `True`):
            Search k on a log scale: the interesting sizes span orders of magnitude (the paper kept 2,532 of
            100,000 rows).
        resolution (`float`, *optional*, defaults to `0.05`):
            Spacing of the candidate sizes: on the log scale neighbouring candidates differ by this factor
            (`0.05`: 5%), on the linear scale by this fraction of the range. `0` makes every integer a candidate.
            Sizes closer than one finetuning run can tell apart only waste trials.
        initial_sizes (`int`, *optional*, defaults to `4`):
            How many spread-out sizes are tried first. They give the search a coarse look at the whole curve, so
            that it does not settle in a local minimum next to the cheap start. The bracketing search spreads them
            over the whole range (one per equal stretch, at a seeded shift; cheapest first where the range spans
            costs so different that its largest size costs more than the others together); BlendSearch
            log-spaces (or evenly spaces) them from `low`, leaving out the expensive top of the range. `0` starts
            from `low` alone.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the searcher and the random-selection baseline. It is not part of the search id: a search with
            another seed reuses every finished size of the same search (its random-baseline trials excepted, as the
            seed draws their rows) and counts it in its budget.
        score_column (`str`, *optional*, defaults to `"instruct_score"`):
            The column that ranks rows, lower is better.
        search_id (`str`, *optional*):
            Names the search in the store. By default it is derived from the data, the score column and the trial
            (the labelling config and eval set, or the objective's name), so re-running the same search resumes it.
            Set it to share or separate trials explicitly.
        max_concurrent_trials (`int`, *optional*):
            How many trials run at once: the searcher proposes the next sizes while earlier ones are still running.
            By default one at a time in [`search_subset_size`], and as many as the cluster has room for in
            [`search_subset_size_with_ray`]. More than one needs an `objective` (called from several threads, so
            it must be thread-safe) or Ray: the built-in trial finetunes in this process, on one device. With one
            at a time a seed gives the same search every time, and a stopped search resumes to the same result;
            with more, the sizes proposed depend on which trials finish first. It does not enter the search id:
            any concurrency resumes the same search.
    """

    method: str = field(
        default="bracket",
        metadata={
            "help": "The searcher: bracket (a coarse sweep, then parabolic narrowing of the lowest basins) or "
            "blendsearch (FLAML's BlendSearch, cost-aware).",
            "choices": METHODS,
        },
    )
    log_scale: bool = field(default=True, metadata={"help": "Search k on a log scale."})
    resolution: float = field(
        default=0.05,
        metadata={
            "help": "Spacing of the candidate sizes: a factor on the log scale (0.05 = 5 percent), a fraction of "
            "the range on the linear scale; 0 makes every integer a candidate."
        },
    )
    initial_sizes: int = field(
        default=4,
        metadata={
            "help": "Spread-out sizes tried first, cheapest first, before the searcher narrows down; 0 starts from "
            "the smallest size alone."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds the searcher and the random-selection baseline."})
    score_column: str = field(
        default="instruct_score", metadata={"help": "The column that ranks rows (lower is better)."}
    )
    search_id: str | None = field(
        default=None, metadata={"help": "Names the search in the store (derived from the data and trial by default)."}
    )
    max_concurrent_trials: int | None = field(
        default=None,
        metadata={
            "help": "How many trials run at once: 1 by default, as many as the cluster holds with Ray. More than one "
            "needs a thread-safe objective or Ray; the built-in trial runs one finetuning at a time."
        },
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got `{self.method!r}`.")
        if not 0 <= self.resolution < 1:
            raise ValueError(f"`resolution` must be in [0, 1), got `{self.resolution!r}`.")
        if self.initial_sizes < 0:
            raise ValueError(f"`initial_sizes` must be at least 0, got `{self.initial_sizes!r}`.")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(
                f"`max_concurrent_trials` must be at least 1 (or `None`), got `{self.max_concurrent_trials!r}`."
            )
