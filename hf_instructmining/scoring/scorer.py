"""Score instruction data with a quality rule: `ds.map(instruct_score)` and `compute_indicators(ds, names)`.

[`InstructScorer`] is a `Dataset.map` function that computes exactly the indicators its rule needs (the three
UniEval columns share one model and one indicator), then the rule's prediction in the `instruct_score` column:
the predicted log eval loss of a model finetuned on the data, lower is better (paper, Section 3).
`instruct_score` is a ready scorer for the default rule, `instructmining-llama2-7b`; it is built on first access
and loads its models on its first call.

A scorer's state is its configuration (the rule as JSON, model names, options), never a loaded model: it pickles
to `num_proc` workers and fingerprints cheaply, and `map` caches work across calls and processes.

KNN indicators (`knn_6`, ...) depend on a neighbour set, not on one example. Inside `map` a scorer therefore
needs an explicit `reference` set; it never falls back to neighbours within each batch. To take the neighbours
from the whole dataset itself, use [`compute_indicators`], which embeds every row first and then searches.
"""

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

from ..formats import check_examples
from ..indicators import Indicator
from ..indicators.base import compute_all, map_arguments
from ..rules import DEFAULT_RULE, QualityRule
from ..rules.rule import describe_outside_domain
from .checkpoint import DEFAULT_SHARD_SIZE, Checkpoint, fingerprint
from .config import SCORE_COLUMN, ScoreConfig
from .plan import require_models, resolve_rule
from .shards import score_in_shards
from .steps import IndicatorMap, RulePrediction, ScoringPlan, plan_scoring, rows_needed


logger = logging.getLogger(__name__)


class InstructScorer:
    """A `Dataset.map` function adding the indicators a rule needs and the rule's prediction, `instruct_score`.

    `instruct_score` (importable from `hf_instructmining`) is `InstructScorer()`: the default rule with its
    default models. Scores are predicted log eval losses: lower is better.

    Args:
        rule ([`QualityRule`] or `str`, *optional*, defaults to `"instructmining-llama2-7b"`): a rule, a built-in
            rule name, a rule JSON file, or a folder or Hub repo holding `instructmining_rule.json`.
        models (`dict[str, str]`, *optional*): indicator column or family -> model id or local path (see
            [`ScoreConfig`]); replacing a model the rule was fitted with warns once.
        device (`str`, *optional*): where model indicators run; with `map(with_rank=True, num_proc=n)` worker
            `rank` uses GPU `rank % n_gpus`.
        on_invalid (`str`, *optional*, defaults to `"raise"`): `"raise"` on an unreadable row, or `"nan"`.
        reference (`datasets.Dataset`, `np.ndarray` or `str`, *optional*): the neighbour set for KNN indicators (a
            dataset, its embeddings, or a dataset path or Hub id); required when the rule has one. A row that is
            itself in the reference set counts as its own neighbour at distance 0. To take the neighbours from the
            whole scored dataset, each row excluding itself, use [`compute_indicators`] with the rule instead.
        format (`str`, *optional*): force the input layout.
        column_mapping (`dict[str, str]`, *optional*): role -> column.

    Raises:
        `ValueError`: an unknown key in `models`, or a KNN rule without `reference`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import InstructScorer, QualityRule
    >>> rule = QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}})
    >>> ds = Dataset.from_dict({"instruction": ["Say hi"], "output": ["Hello there, my friend."]})
    >>> scored = ds.map(InstructScorer(rule=rule))
    >>> round(scored[0]["instruct_score"], 3), scored[0]["mtld"], scored[0]["output_length"]
    (0.964, 4.0, 4.0)
    ```
    """

    #: Bump when the scores a scorer writes change for the same configuration (invalidates `map` caches).
    version: ClassVar[str] = "1"

    def __init__(
        self,
        rule: QualityRule | str = DEFAULT_RULE,
        *,
        models: Mapping[str, str] | None = None,
        device: str | None = None,
        on_invalid: str = "raise",
        reference: Any = None,
        format: str | None = None,
        column_mapping: Mapping[str, str] | None = None,
    ):
        self.rule = resolve_rule(rule)
        self.config = ScoreConfig(
            rule=self.rule.name or "",
            models=dict(models or {}),
            device=device,
            on_invalid=on_invalid,
            format=format,
            column_mapping=dict(column_mapping) if column_mapping else None,
            reference=os.fspath(reference) if isinstance(reference, (str, os.PathLike)) else None,
        )
        self.reference = reference
        self._indicators = self._build(warn=True)
        self._models_checked = False

    @classmethod
    def from_config(cls, config: ScoreConfig) -> "InstructScorer":
        """A scorer from a [`ScoreConfig`] (e.g. parsed from the command line or a YAML file)."""
        options = asdict(config)
        return cls(options.pop("rule"), **options)

    def _build(self, *, warn: bool) -> list[Indicator]:
        plan = plan_scoring([], self.rule, self.config, reference=self.reference, warn=warn, stacklevel=4)
        if plan.whole:
            knn = [c for i in plan.whole for c in i.columns]
            raise ValueError(
                f"The rule {self.rule.name or ''} needs {knn}, the distance to the k-th nearest neighbour within a "
                "set of examples, which one example or one batch cannot define. Pass `reference=` (a Dataset whose "
                "examples are the neighbour set), or score the whole dataset with "
                "`compute_indicators(ds, rule=...)`, which uses every row of the dataset as the neighbour set."
            )
        return plan.per_row

    @property
    def columns(self) -> list[str]:
        """The columns the scorer writes: the rule's indicator columns, then `instruct_score`."""
        return [*self.rule.columns, SCORE_COLUMN]

    def __call__(
        self,
        examples: Mapping[str, Any],
        *map_args: Any,
        indices: Sequence[int] | int | None = None,
        rank: int | None = None,
    ) -> dict[str, Any]:
        """Score one example or a batch; returns the indicator columns and `instruct_score`.

        Takes what `Dataset.map` passes with `with_indices=True` and/or `with_rank=True` after the examples; an
        unreadable row's error names its dataset row either way (see
        [`~hf_instructmining.indicators.base.map_arguments`]).

        Raises:
            `TypeError`: `examples` is neither one example (a dict of column -> value) nor a batch (column -> list).
            `ValueError`: on the first call, a model the rule needs cannot load (offline and not cached, with no
                offline copy); the message names it and the fix, as `compute_indicators` does.
            [`~hf_instructmining.errors.InvalidExampleError`]: an unreadable row, with `on_invalid="raise"`.
        """
        check_examples(examples)
        if not self._models_checked:
            # Models load lazily, on this first call: one that cannot load fails here as `compute_indicators` (and the
            # command line) fails before any work, naming the model and the fix (the offline rule, `models=`).
            require_models(self._indicators)
            self._models_checked = True
        indices, rank = map_arguments(map_args, indices=indices, rank=rank)
        values = compute_all(self._indicators, examples, indices=indices, rank=rank)
        # Invalid rows (on_invalid="nan") have NaN indicators and so a NaN score, never a number.
        batched = isinstance(values[self.rule.columns[0]], list)
        prediction = RulePrediction(self.rule)(values if batched else {c: [values[c]] for c in self.rule.columns})
        values[SCORE_COLUMN] = prediction[SCORE_COLUMN] if batched else prediction[SCORE_COLUMN][0]
        return values

    def __getstate__(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "config": asdict(self.config),
            "reference": self.reference,
            "_scorer_version": self.version,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rule = QualityRule.from_dict(state["rule"])
        self.config = ScoreConfig(**state["config"])
        self.reference = state["reference"]
        self._indicators = self._build(warn=False)
        self._models_checked = False

    def __repr__(self) -> str:
        options = {k: v for k, v in asdict(self.config).items() if k != "rule" and v not in (None, {}, "raise")}
        return f"InstructScorer(rule={self.rule.name!r}{''.join(f', {k}={v!r}' for k, v in options.items())})"


def compute_indicators(
    ds: Any,
    names: str | Sequence[str] | None = None,
    *,
    rule: QualityRule | str | None = None,
    models: Mapping[str, str] | None = None,
    device: str | None = None,
    on_invalid: str = "raise",
    num_proc: int | None = None,
    reference: Any = None,
    format: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    batch_size: int = 256,
    checkpoint_dir: str | os.PathLike | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Any:
    """Compute any set of indicators over a whole dataset (and, given a rule, its `instruct_score`).

    KNN indicators are computed over the whole dataset as embed-then-search: every row is embedded first, then each
    row's k-th nearest neighbour is searched among all rows (itself excluded), or among `reference` when given.
    Summarise the result with [`~hf_instructmining.scoring.summarize_dataset`].

    Args:
        ds (`datasets.Dataset`): the examples, in any supported layout.
        names (`str` or `Sequence[str]`, *optional*): indicator columns, e.g. `["reward", "mtld", "knn_6"]`.
        rule ([`QualityRule`] or `str`, *optional*): also compute the rule's indicators (with the models its
            coefficients assume) and its prediction, `instruct_score`.
        models (`dict[str, str]`, *optional*): indicator column or family -> model id or local path.
        device (`str`, *optional*): where model indicators run.
        on_invalid (`str`, *optional*, defaults to `"raise"`): `"raise"` on an unreadable row, or `"nan"`.
        num_proc (`int`, *optional*): `Dataset.map` worker processes (with `with_rank`, one GPU each in turn).
        reference (`datasets.Dataset`, *optional*): the neighbour set for KNN indicators instead of `ds` itself.
        format (`str`, *optional*): force the input layout.
        column_mapping (`dict[str, str]`, *optional*): role -> column.
        batch_size (`int`, *optional*, defaults to `256`): rows per `map` batch (models batch by tokens within it).
        checkpoint_dir (`str` or `os.PathLike`, *optional*): make the job resumable: finished rows are written to this
            folder every `shard_size` rows, atomically, and a rerun with the same arguments computes only the rows
            not written yet; its result equals that of an uninterrupted run. A folder holding another job's shards
            (another rule, other options, changed input rows) is not reused: a warning names what changed and the
            job starts afresh there, removing those shards. The returned dataset memory-maps the folder's files:
            save it before deleting the folder. See [`~hf_instructmining.scoring.checkpoint`].
        shard_size (`int`, *optional*, defaults to `2048`): rows per checkpoint shard (with `checkpoint_dir`): what
            a killed job recomputes at most. A multiple of `batch_size` cuts no batch.

    Returns:
        `datasets.Dataset`: `ds` with the indicator columns (and `instruct_score`) added or overwritten. Each
        column records how it was made (see [`~hf_instructmining.scoring.provenance`]), for the dataset card.

    Raises:
        `ValueError`: a model cannot be loaded (offline, not in the Hugging Face cache, no offline copy), or a KNN
            indicator has fewer rows than it needs (more than `k` in `ds`, or `k` in `reference`), before any work
            is done.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import compute_indicators
    >>> ds = Dataset.from_dict({"instruction": ["Say hi", "Count"], "output": ["Hello there", "one two three"]})
    >>> compute_indicators(ds, ["output_length", "mtld"])["output_length"][:]
    [2.0, 3.0]
    ```
    """
    names = _as_list(names)
    if len(ds) == 0:  # `map` never calls a function on zero rows: nothing would be added, and nothing said
        raise ValueError(f"The dataset is empty (0 rows; columns: {ds.column_names}): there is nothing to score.")
    if rule is None and not names:
        raise ValueError("Name the indicators to compute (`names=`), or give a `rule=` whose indicators to compute.")
    rule = None if rule is None else resolve_rule(rule)
    column, needed = rows_needed(names, rule)
    if reference is None and len(ds) < needed:
        raise ValueError(
            f"`{column}` needs at least {needed} rows (each row's {needed - 1} nearest neighbours are other rows); "
            f"the dataset has {len(ds)} rows: score at least {needed}, or pass `reference=` (a dataset of at least "
            f"{needed - 1} rows) to take the neighbours from."
        )
    # A path is read when the plan is made; a dataset or an array is here already, and its size known.
    given = reference is not None and not isinstance(reference, (str, os.PathLike))
    if column is not None and given and len(reference) < needed - 1:
        raise ValueError(
            f"`{column}` takes each row's {needed - 1} nearest neighbours from `reference=`, which has "
            f"{len(reference)} rows: give a reference set of at least {needed - 1} rows."
        )
    config = ScoreConfig(
        models=dict(models or {}),
        device=device,
        on_invalid=on_invalid,
        format=format,
        column_mapping=dict(column_mapping) if column_mapping else None,
    )
    plan = plan_scoring(names, rule, config, reference=reference, require=True, stacklevel=3)
    if checkpoint_dir is not None:
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"`shard_size` must be a positive number of rows, got `{shard_size!r}`.")
        options = {**asdict(config), "names": names, "batch_size": batch_size}
        manifest = fingerprint(plan, ds, options=options, reference=reference, shard_size=shard_size)
        checkpoint = Checkpoint(checkpoint_dir, manifest, len(ds), shard_size)
        ds = score_in_shards(ds, plan, checkpoint, batch_size=batch_size, num_proc=num_proc)
    else:
        ds = _score_in_memory(ds, plan, batch_size=batch_size, num_proc=num_proc)
    if plan.rule is not None:
        # The rule's columns as float arrays (8 bytes a value), not Python lists of floats (32): a million rows' worth.
        outside = describe_outside_domain(plan.rule, ds.select_columns(plan.rule.columns).with_format("numpy"))
        if outside:
            warnings.warn(outside, UserWarning, stacklevel=2)
    return ds


def _score_in_memory(ds: Any, plan: ScoringPlan, *, batch_size: int, num_proc: int | None) -> Any:
    """The plan's columns computed with `Dataset.map` (cached by `datasets`) and KNN's embed-then-search."""
    if plan.per_row:
        ds = ds.map(
            IndicatorMap(plan.per_row),
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            with_rank=num_proc is not None,
            num_proc=num_proc,
            desc=f"Computing {', '.join(c for i in plan.per_row for c in i.columns)}",
        )
    for indicator in plan.whole:
        # Embed every row, then search: the neighbours of a row are the other rows of the dataset.
        for column, values in indicator.compute_dataset(ds).items():
            ds = ds.remove_columns(column) if column in ds.column_names else ds
            ds = ds.add_column(column, values)
    if plan.rule is not None:
        ds = ds.map(RulePrediction(plan.rule), batched=True, batch_size=batch_size, desc="Computing instruct_score")
    return plan.attach_provenance(ds)


def _as_list(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)
