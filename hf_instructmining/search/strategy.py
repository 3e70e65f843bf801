"""What a subset-size search tries next: the candidate sizes, the bracketing search (the default) and FLAML's BlendSearch.

Both searchers speak FLAML's searcher protocol (`suggest(trial_id)` -> a point or `None`, then
`on_trial_complete(trial_id, result)`), so `trials.TrialLoop` runs either one. Both are deterministic given
their seed and the results fed to them: that is what lets a stopped search resume by replaying its stored trials.
`benchmarks/bench_search.py` measures them against a coarse-to-fine grid and random search.
"""

import logging
import math
import warnings

import numpy as np

from ..import_utils import require
from .config import SearchConfig


logger = logging.getLogger(__name__)


# A bracket around a local minimum wider than this fraction of the searched range is narrowed before anything
# else; a narrower one is narrowed only while its sides rise more than `_STEEP` (relative) above its middle, and
# otherwise takes turns with the search for other basins.
_WIDE = 0.075
_STEEP = 0.01
# On a wide range the end is tried right after a fall only if, at the rate between the two largest sizes tried,
# the loss would fall by more than this fraction of itself over the whole range: a data scaling law does (at its
# rate near 10,000 rows, 1 + 1.5 (k / 100)^-0.3 would fall by over half over [100, 100,000]), a slope of 2% per
# decade beside a narrow basin does not (7%).
_FALLING = 0.2
_GOLDEN = (3 - math.sqrt(5)) / 2
# BlendSearch answers `None` while a local thread whose step has shrunk to one candidate keeps proposing finished
# neighbours: runs of a thousand and more happen around a well-explored basin, at about 0.3 ms each. This many in
# a row ends the search.
_MAX_EMPTY_SUGGESTIONS = 20_000
_OPTUNA_WRAPPERS = ("flaml.tune.searcher.suggestion", "ray.tune.search.optuna.optuna_search")


class SizeSpace:
    """The candidate sizes, indexed cheapest first, with their positions on the search scale (log k or k).

    A searcher's point is `{"k": index}` into the size grid, or `{"k": k}` when every integer is a candidate
    (`resolution=0`).
    """

    def __init__(self, low: int, high: int, config: "SearchConfig"):
        self.low, self.high, self.log_scale = low, high, config.log_scale
        self.grid = size_grid(low, high, config.log_scale, config.resolution)
        self.count = high - low + 1 if self.grid is None else len(self.grid)
        scale = np.log if self.log_scale else np.asarray
        self._positions = None if self.grid is None else scale(self.grid.astype(float))

    def size(self, index: int) -> int:
        return self.low + int(index) if self.grid is None else int(self.grid[int(index)])

    def index(self, k: int) -> int:
        """The index of the candidate nearest to `k` on the search scale."""
        return self.nearest(self.position_of(k))

    def position_of(self, k: float) -> float:
        return math.log(k) if self.log_scale else float(k)

    def position(self, index: int) -> float:
        if self._positions is None:
            return self.position_of(self.low + int(index))
        return float(self._positions[int(index)])

    def nearest(self, position: float) -> int:
        """The index of the candidate nearest to a position on the search scale."""
        if self._positions is None:
            k = math.exp(position) if self.log_scale else position
            return int(min(max(round(k), self.low), self.high)) - self.low
        i = int(np.searchsorted(self._positions, position))
        if i == 0 or i == self.count:
            return min(i, self.count - 1)
        return i if self._positions[i] - position < position - self._positions[i - 1] else i - 1

    def to_k(self, point: dict) -> int:
        return int(point["k"]) if self.grid is None else self.size(point["k"])

    def to_point(self, k: int) -> dict:
        return {"k": int(k)} if self.grid is None else {"k": self.index(k)}

    def initial(self, n: int) -> list[dict]:
        """BlendSearch's first points: `n` spread-out candidates from `low` upwards; the top of the range is left out."""
        if n == 0:
            return []
        if self.grid is not None:
            return [{"k": int(i)} for i in np.unique(np.round(np.linspace(0, len(self.grid) - 1, n + 1)[:-1]))]
        spaced = (np.geomspace if self.log_scale else np.linspace)(self.low, self.high, n + 1)[:-1]
        return [{"k": int(k)} for k in np.unique(np.round(spaced))]


def size_grid(low: int, high: int, log_scale: bool, resolution: float) -> np.ndarray | None:
    if resolution == 0 or low == high:
        return None
    if log_scale:
        n = math.ceil(math.log(high / low) / math.log1p(resolution)) + 1
        grid = np.geomspace(low, high, n)
    else:
        grid = np.linspace(low, high, math.ceil(1 / resolution) + 1)
    return np.unique(np.clip(np.round(grid), low, high).astype(np.int64))


def make_searcher(sizes: SizeSpace, warm: dict[int, float], config: "SearchConfig"):
    """The searcher of `config.method`, warm-started from finished trials (size -> loss) of other searches."""
    if config.method == "bracket":
        return Bracket(sizes, warm, config.initial_sizes, config.seed)
    return blendsearch(sizes, warm, config)


class Bracket:
    """Bracketing search over the candidate sizes: a coarse sweep, then narrowing the lowest basins.

    1. `initial` sizes spread evenly over the whole range (on the log scale by default), one per equal cell: the
       first points of a coarse-to-fine grid at a seeded shift, so no basin is much wider than their spacing. On a
       wide range (the largest of them costs more than the others together, as on [100, 100,000]) the others run
       cheapest first and the largest, the dearest trial of all, waits: it runs once they show no basin to
       narrow, or a loss falling towards it, or as the first look elsewhere. On a narrow range (k in [16, 128])
       cost hardly tells the sizes apart and the sweep runs in the grid's own order (half the range apart, then
       the quarters), so its first sizes are a plain grid's.
    2. When the lowest loss sits at the largest size tried: on a narrow range, or where the loss falls through
       every size tried, and steeply (by more than a fifth of itself over the range at its last rate, as a data
       scaling law does), the end of the range comes next ("keep everything" is found in one more trial). A
       gentle fall on a wide range explores the cheaper untried stretches first, since a narrow basin may hide
       there and the end is the dearest trial; a loss that rose and then fell again is followed by a
       golden-section step towards the end instead of a jump. The smallest end is tried as soon as the lowest
       loss sits at the smallest size tried.
    3. Each local minimum of the sizes tried, the lowest first, is narrowed by parabolic interpolation through it
       and its two neighbours on the search scale, with a golden-section step when the parabola is of no use (it
       opens downwards, or lands on a size already tried).
    4. Once the lowest minimum's bracket is narrow and flat (its sides within 1% of its middle), narrowing it
       takes turns with bisecting the widest stretch of the range not yet tried, which finds basins that the
       sweep stepped over; every other minimum gets its turn too.

    No size is ever proposed twice, nor one that is still running: with several trials at once, sizes in
    flight count as tried for where the gaps are, and as unknown for where the minima are. Deterministic given
    its seed and the losses fed to it.

    Args:
        sizes (`SizeSpace`): the candidate sizes.
        warm (`dict[int, float]`): finished trials of other searches, size -> loss, taken as already known.
        initial (`int`): sizes in the sweep (`0`: start from the smallest size).
        seed (`int`): seeds the sweep's shift.
    """

    max_empty = 1  # `None` means that nothing can be proposed until a running trial finishes

    def __init__(self, sizes: SizeSpace, warm: dict[int, float], initial: int, seed: int):
        self.sizes = sizes
        self.losses: dict[int, float] = {}
        for k, loss in warm.items():
            index = sizes.index(k)
            self.losses[index] = min(loss, self.losses.get(index, math.inf))
        self.running: dict[str, int] = {}
        self.turn = 0
        self.sweep = self._sweep(initial, float(np.random.default_rng(seed).uniform()))
        # On a wide range the sweep's largest size costs more than the others together: they run first, cheapest
        # first, and it waits (step 1 of the class docstring). On a narrow range the sweep keeps the grid's order.
        self.deferred = None
        if len(self.sweep) > 2:
            dearest = max(self.sweep)
            if sizes.size(dearest) > sum(sizes.size(i) for i in self.sweep if i != dearest):
                self.deferred = self.sweep.pop(self.sweep.index(dearest))
                self.sweep.sort()
        self.wide = self.deferred is not None

    def _sweep(self, n: int, shift: float) -> list[int]:
        """The first `n` points of a coarse-to-fine grid over the range, shifted by `shift` (a fraction of it)."""
        if n == 0:
            return [0]
        low, high = self.sizes.position(0), self.sizes.position(self.sizes.count - 1)
        span = (high - low) / n
        rotation, offset = divmod(shift * n, 1.0)
        known = [self.sizes.position(i) for i in self.losses]
        sweep = []
        # Cells in bit-reversed order (0, 2, 1, 3 of four), rotated by the shift: every prefix of 2, 4, ... points
        # is an even grid.
        bits = max(1, (n - 1).bit_length())
        for i in sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2)):
            centre = low + ((i + int(rotation)) % n + offset) * span
            # A warm start that already has a trial in this cell needs no sweep point there.
            if not any(abs(p - centre) <= span / 2 for p in known):
                index = self.sizes.nearest(centre)
                if index not in sweep:
                    sweep.append(index)
        return sweep

    def suggest(self, trial_id: str) -> dict | None:
        index = self._next()
        if index is None:
            return None
        self.running[trial_id] = index
        return self.sizes.to_point(self.sizes.size(index))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.running.pop(trial_id, None)
        if result and not error:
            index = self.sizes.index(self.sizes.to_k(result["config"]))
            self.losses[index] = min(result["loss"], self.losses.get(index, math.inf))

    def _next(self) -> int | None:
        taken = set(self.losses) | set(self.running.values())
        while self.sweep:
            index = self.sweep.pop(0)
            if index not in taken:
                return index
        if self.deferred in taken:
            self.deferred = None
        tried = sorted(self.losses)
        if not tried:  # the whole sweep is still running
            return self._take(self.deferred) if self.deferred is not None else self._widest_gap(sorted(taken))
        losses = [self.losses[i] for i in tried]
        best = min(range(len(tried)), key=lambda j: (losses[j], tried[j]))
        last = self.sizes.count - 1
        # The loss is lowest at the largest size tried (step 2 of the class docstring): the deferred sweep size if
        # the loss falls through every size tried, then the end if that fall is steep or the range narrow; on a
        # wide range, the cheaper untried stretches after a gentle fall, a golden-section step after a bump.
        if best == len(tried) - 1 and tried[best] < last:
            falling = all(a > b for a, b in zip(losses, losses[1:], strict=False))
            if falling and self.deferred is not None and self.deferred > tried[best]:
                return self._take(self.deferred)
            if not self.wide or (falling and self._steep(tried[-2:], losses[-2:])):
                return last if last not in taken else self._widest_gap(sorted(taken))
            if falling:
                return self._widest_gap(sorted(taken), ends=1.0)
            up = self.sizes.nearest(
                self.sizes.position(tried[best]) * (1 - _GOLDEN) + self.sizes.position(last) * _GOLDEN
            )
            if up not in taken:
                return up
        if best == 0 and tried[0] > 0:
            return 0 if 0 not in taken else self._widest_gap(sorted(taken))
        minima = [m for m in range(1, len(tried) - 1) if losses[m] < min(losses[m - 1], losses[m + 1])]
        minima.sort(key=lambda m: (losses[m], tried[m]))
        if self.deferred is not None and not minima:
            return self._take(self.deferred)
        gap = self.deferred if self.deferred is not None else self._widest_gap(sorted(taken))
        span = self.sizes.position(last) - self.sizes.position(0)
        for m in minima:
            local = self._narrow(tried, losses, m, taken)
            if local is None:
                continue
            wide = self.sizes.position(tried[m + 1]) - self.sizes.position(tried[m - 1]) > _WIDE * span
            steep = max(losses[m - 1], losses[m + 1]) - losses[m] > _STEEP * abs(losses[m])
            if gap is None or wide or (steep and m == minima[0]):
                return local
            self.turn += 1
            return self._take(gap) if self.turn % 2 else local
        return self._take(gap) if gap is not None else None

    def _steep(self, pair: list[int], losses: list[float]) -> bool:
        """Whether the loss falls between the two sizes `pair` by more than `_FALLING` of itself per whole range."""
        (x0, x1), (y0, y1) = (self.sizes.position(i) for i in pair), losses
        span = self.sizes.position(self.sizes.count - 1) - self.sizes.position(0)
        return (y0 - y1) / (x1 - x0) * span > _FALLING * abs(y1)

    def _take(self, index: int) -> int:
        if index == self.deferred:
            self.deferred = None
        return index

    def _narrow(self, tried: list[int], losses: list[float], m: int, taken: set[int]) -> int | None:
        """The next size inside the bracket around the local minimum `tried[m]`, or `None` once it is closed."""
        left, middle, right = tried[m - 1], tried[m], tried[m + 1]
        if middle - left <= 1 and right - middle <= 1:
            return None
        xl, xm, xr = (self.sizes.position(i) for i in (left, middle, right))
        yl, ym, yr = losses[m - 1], losses[m], losses[m + 1]
        denominator = (xm - xl) * (ym - yr) - (xm - xr) * (ym - yl)
        if denominator != 0:
            vertex = xm - 0.5 * ((xm - xl) ** 2 * (ym - yr) - (xm - xr) ** 2 * (ym - yl)) / denominator
            index = self.sizes.nearest(vertex)
            if left < index < right and index != middle and index not in taken:
                return index
        if xr - xm >= xm - xl:  # golden section into the wider side
            index, step = self.sizes.nearest(xm + _GOLDEN * (xr - xm)), 1
        else:
            index, step = self.sizes.nearest(xm - _GOLDEN * (xm - xl)), -1
        if index == middle:
            index = middle + step
        return index if left < index < right and index not in taken else None

    def _widest_gap(self, taken: list[int], ends: float = 2.0) -> int | None:
        """The middle of the widest stretch with no size tried or running; an untried end's stretch counts `ends`
        times its width (double by default: a trial at the end looks at its stretch from one side only)."""
        if not taken:
            return 0
        last = self.sizes.count - 1
        position = self.sizes.position
        gaps = []  # (width, -index, index): the widest, then the cheapest
        if taken[0] > 0:
            gaps.append((ends * (position(taken[0]) - position(0)), 0, 0))
        if taken[-1] < last:
            gaps.append((ends * (position(last) - position(taken[-1])), -last, last))
        for a, b in zip(taken, taken[1:], strict=False):
            if b - a > 1:
                index = min(max(self.sizes.nearest((position(a) + position(b)) / 2), a + 1), b - 1)
                gaps.append((position(b) - position(a), -index, index))
        return max(gaps)[2] if gaps else None


def load_flaml():
    require("flaml", "search_subset_size")
    # flaml warns at import that its AutoML part is missing; the search needs only `flaml.tune`.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flaml.automl is not available.*")
        import flaml

    # BlendSearch's global search is FLAML's Optuna wrapper, or Ray Tune's when Ray is installed.
    for name in _OPTUNA_WRAPPERS:
        wrapper = logging.getLogger(name)
        if _quiet_repeats not in wrapper.filters:
            wrapper.addFilter(_quiet_repeats)
    return flaml


def _quiet_repeats(record: logging.LogRecord) -> bool:
    # BlendSearch re-proposes a finished size through a fallback and then tells Optuna about it twice; the
    # warning that follows is about flaml's bookkeeping, not the user's search.
    return not record.getMessage().startswith("Received additional completion")


def blendsearch(sizes: SizeSpace, warm: dict[int, float], config: "SearchConfig"):
    """FLAML's BlendSearch, cost-aware: a trial's cost is its size, and the local search starts from the cheapest."""
    import optuna

    flaml = load_flaml()
    tune = flaml.tune
    if sizes.grid is None:
        domain = {"k": (tune.lograndint if sizes.log_scale else tune.randint)(sizes.low, sizes.high + 1)}
        start = {"k": sizes.low}
    else:
        # An integer index is uniform over the grid, which is already log- or linearly spaced.
        domain = {"k": tune.randint(0, len(sizes.grid))}
        start = {"k": 0}
    # Several finished sizes can fall on one candidate: keep the best loss of each. BlendSearch starts local
    # search from the best of these; the rest come back from the store, unrun, if it proposes them again.
    best: dict[int, float] = {}
    for k, loss in warm.items():
        index = sizes.to_point(k)["k"]
        best[index] = min(best.get(index, math.inf), loss)
    # The initial sizes not run yet follow the finished ones (which come with their losses and are not rerun).
    points = [{"k": index} for index in best]
    points += [p for p in sizes.initial(config.initial_sizes) if p["k"] not in best]
    # BlendSearch creates an Optuna study per search; its INFO line says nothing a user needs.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        searcher = flaml.BlendSearch(
            metric="loss",
            mode="min",
            space=domain,
            low_cost_partial_config=start,
            points_to_evaluate=points or None,
            evaluated_rewards=list(best.values()) or None,
            # Neither a sample count nor a time budget: given to BlendSearch they change what it proposes (and
            # the time budget makes it read the clock), which would stop a resumed search from replaying.
            cost_attr="cost",
            seed=config.seed,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    searcher.max_empty = _MAX_EMPTY_SUGGESTIONS
    return searcher
