"""What made a scored dataset: the rule behind `instruct_score`, and how each indicator column was computed.

[`~hf_instructmining.compute_indicators`] records on every column it writes how that column was made. An
indicator column gets the indicator's options and how it ran (`metadata()` for model indicators, e.g. the resolved
prompt template; `spec()` for the others), plus the offline copy that stood in for a Hub model when one did; the
score column gets the whole rule. A record sits in the column's feature (`datasets.Value("float64", id=<JSON>)`),
so it travels with the data through `select`, `filter`, `map`, `save_to_disk` and parquet files (the Hub's
included). Formats without a schema (JSON Lines, CSV) and rewrites outside `datasets` (pandas) drop it.

The score column's record also holds the scoring call's options (`scoring`: the extra indicator columns, the
models given, the invalid-row policy, the layout), and a selection (`select_top_k`, `select_fraction`,
`select_threshold`) records its call on `row_index`: a dataset card's "How to reproduce" is generated from them.

[`check_scores`] runs before a card is written ([`~hf_instructmining.save_scored`], `push_to_hub`): whatever the
records say, the rule given must reproduce the score column from the indicator columns, row by row, and must be
the rule recorded with the data when there is one: the same name, formula (domain, out-of-range policy and
transforms included), response and indicator options, the defaults filled in. Without a recorded rule, the options
recorded on the indicator columns must be the ones the rule declares. And the texts must be the ones scored, when
the rows are (a digest of them is recorded with the score column, see `texts.py`). So a card never names a rule that
did not make its scores, nor states options they were not computed with.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import offline
from .._json import to_jsonable
from ..errors import ScoreProvenanceError, shorten
from ..indicators import get_indicator
from ..rules import QualityRule
from . import texts


if TYPE_CHECKING:
    from datasets import Dataset

    from ..indicators import Indicator


logger = logging.getLogger(__name__)

_KEY = "hf_instructmining"
# Scores written as JSON Lines keep 15 significant digits, CSV as many as pandas prints: far tighter than any two
# different rules, far looser than a round trip.
_RTOL, _ATOL = 1e-6, 1e-9


@dataclass
class Provenance:
    """The records of a scored dataset.

    Args:
        rule ([`QualityRule`], *optional*): the rule that made the score column, when recorded.
        indicators (`dict[str, dict]`): indicator column -> how it was made (`indicator`, `options`, and
            `offline_copy` when a packaged copy stood in for the Hub model).
        scoring (`dict`, *optional*): the options of the call that computed the score column (see
            [`scoring_call`]), when recorded.
        selection (`list[dict]`): the selection calls that chose these rows from the scored rows, in order (see
            [`attach_selection`]); empty when the rows are not a recorded selection.
    """

    rule: QualityRule | None = None
    indicators: dict[str, dict[str, Any]] = field(default_factory=dict)
    scoring: dict[str, Any] | None = None
    selection: list[dict[str, Any]] = field(default_factory=list)


def indicator_record(indicator: "Indicator") -> dict[str, Any]:
    """How an indicator makes its columns: its class, its options and how it ran, and any offline copy it used.

    A model that was loaded from an offline copy is recorded under the Hub id it stands in for (the copy's local
    path says nothing to a reader of the card), with `offline_copy` saying what the copy is.

    Example:

    ```py
    >>> from hf_instructmining.indicators import MTLD
    >>> from hf_instructmining.scoring.provenance import indicator_record
    >>> indicator_record(MTLD())
    {'indicator': 'MTLD', 'options': {'threshold': 0.72}}
    ```
    """
    # `metadata()` (model indicators) adds what the run resolved to `spec()`; whatever it returns is recorded.
    options = dict(to_jsonable(getattr(indicator, "metadata", indicator.spec)()))
    record: dict[str, Any] = {"indicator": type(indicator).__name__, "options": options}
    for key in ("model", "tokenizer"):
        copy = offline.copy_of(options[key]) if isinstance(options.get(key), str) else None
        if copy is not None:
            options[key] = copy.model_id
            record["offline_copy"] = copy.record()
    return record


def scoring_call(names: list[str], models: dict[str, str], options: dict[str, Any], reference: Any) -> dict[str, Any]:
    """The options of a scoring call that decide its scores, as a card's recipe repeats them.

    A model folder that is an offline copy is recorded as the Hub id it stands in for (offline, that id loads the
    same copy again); a `reference` given as a dataset or embeddings, not a path, is recorded as `True`: its rows
    are not. Options left at their defaults are left out.

    Example:

    ```py
    >>> from hf_instructmining.scoring.provenance import scoring_call
    >>> scoring_call(["mtld"], {}, {"on_invalid": "nan", "format": None}, None)
    {'names': ['mtld'], 'on_invalid': 'nan'}
    ```
    """
    call: dict[str, Any] = {"names": list(names)}
    if models:
        copies = {key: offline.copy_of(value) if isinstance(value, str) else None for key, value in models.items()}
        call["models"] = {key: copies[key].model_id if copies[key] else value for key, value in models.items()}
    call.update({k: v for k, v in options.items() if v is not None and (k, v) != ("on_invalid", "raise")})
    if reference is not None:
        call["reference"] = reference if isinstance(reference, str) else True
    return to_jsonable(call)


def attach(
    ds: "Dataset",
    indicators: "list[Indicator]",
    rule: QualityRule | None = None,
    score_column: str = "instruct_score",
    scoring: dict[str, Any] | None = None,
) -> "Dataset":
    """Record on `ds`'s columns how they were made: each indicator's columns, and `rule` on the score column, with
    the options of the `scoring` call (see [`scoring_call`]) when given.

    Returns:
        `datasets.Dataset`: the same rows; only the features change (a cheap Arrow-level cast).
    """
    records = {column: indicator_record(indicator) for indicator in indicators for column in indicator.columns}
    if rule is not None:
        records[score_column] = {"rule": rule.to_dict(), **({"scoring": scoring} if scoring is not None else {})}
        # A digest of the texts scored: the check tells outputs replaced since (see `texts.py`). The indicators of
        # one call share its `column_mapping`, which says where the texts are.
        mapping = next((i.column_mapping for i in indicators if getattr(i, "column_mapping", None)), None)
        if (scored_texts := texts.record(ds, mapping)) is not None:
            records[score_column]["texts"] = scored_texts
    return _cast(ds, records)


def attach_selection(selected: "Dataset", source: "Dataset", call: dict[str, Any]) -> "Dataset":
    """Record on `selected`'s `row_index` the selection `call` (function name and every argument but the data)
    that chose it from `source`, after the calls recorded on `source` when it is itself a selection.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import select_top_k
    >>> from hf_instructmining.scoring.provenance import read
    >>> ds = Dataset.from_dict({"instruction": ["a", "b"], "output": ["x", "y"], "instruct_score": [0.3, 0.1]})
    >>> read(select_top_k(ds, 1, deduplicate=True)).selection
    [{'function': 'select_top_k', 'k': 1, 'deduplicate': True}]
    ```
    """
    earlier = read(source).selection if "row_index" in source.column_names else []
    return _cast(selected, {"row_index": {"selection": [*earlier, to_jsonable(call)]}})


def _cast(ds: "Dataset", records: dict[str, dict[str, Any]]) -> "Dataset":
    from datasets import Value

    features = ds.features.copy()
    for column, record in records.items():
        if isinstance(features.get(column), Value):
            features[column] = Value(features[column].dtype, id=json.dumps({_KEY: record}))
    return ds.cast(features)


def read(ds: "Dataset", score_column: str = "instruct_score") -> Provenance:
    """The records on `ds`'s columns (empty when the data carries none, e.g. after a JSON Lines round trip)."""
    found = Provenance()
    for column, feature in ds.features.items():
        record = _record(feature)
        if record is None:
            continue
        if column == score_column and "rule" in record:
            found.rule = QualityRule.from_dict(record["rule"], source=f"the `{column}` column's record")
            found.scoring = record.get("scoring")
        elif column == "row_index" and isinstance(record.get("selection"), list):
            found.selection = record["selection"]
        elif "indicator" in record:
            found.indicators[column] = record
    return found


def _record(feature: Any) -> dict[str, Any] | None:
    identifier = getattr(feature, "id", None)
    if not isinstance(identifier, str) or _KEY not in identifier:
        return None
    try:
        record = json.loads(identifier)
    except json.JSONDecodeError:
        return None
    return record.get(_KEY) if isinstance(record, dict) else None


def check_scores(ds: "Dataset", rule: QualityRule | None, score_column: str = "instruct_score") -> QualityRule | None:
    """The rule that made `ds[score_column]`: `rule` once checked, else the one recorded with the data, else `None`.

    Args:
        ds (`datasets.Dataset`): scored rows.
        rule ([`QualityRule`], *optional*): the rule said to have made the scores.
        score_column (`str`, *optional*, defaults to `"instruct_score"`): the score column.

    Raises:
        [`~hf_instructmining.errors.ScoreProvenanceError`]: the data records another rule (the message names each
            field that differs), lacks columns the rule reads, records indicator options other than the rule's, or
            holds scores the rule does not give.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import QualityRule
    >>> from hf_instructmining.scoring.provenance import check_scores
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="toy")
    >>> ds = Dataset.from_dict({"mtld": [10.0, 50.0], "instruct_score": [0.9, 0.5]})
    >>> check_scores(ds, rule).name
    'toy'
    >>> try:
    ...     check_scores(ds, QualityRule(1.0, {"mtld": -0.02}, {"mtld": {}}, name="other"))
    ... except ValueError as err:
    ...     print(str(err).split(". ")[0])
    `instruct_score` was not made by the rule `other`: its formula gives other scores on 2 of 2 rows (row 0: 0.9 in the data, 0.8 by the rule)
    ```
    """
    found = read(ds, score_column)
    recorded = found.rule
    if rule is not None and recorded is not None and (differences := _differences(rule, recorded)):
        raise ScoreProvenanceError(
            _name(rule),
            f"the data records that the rule `{_name(recorded)}` ({recorded.formula()}) made them, which differs in "
            + "; ".join(differences),
            recorded=_name(recorded),
            score_column=score_column,
        )
    checked = rule if rule is not None else recorded
    if checked is not None:
        reason = _disagreement(ds, checked, score_column)
        if not reason and recorded is None and (unlike := _unlike_records(checked, found.indicators)):
            reason = f"its indicator columns were not computed as it declares: {'; '.join(unlike)}"
        if not reason:  # the indicator columns agree with the scores: do they still describe these texts?
            reason = texts.changed(ds, (_record(ds.features.get(score_column)) or {}).get("texts"))
        if reason:
            raise ScoreProvenanceError(
                _name(checked),
                reason,
                recorded=_name(recorded) if recorded is not None and checked is not recorded else None,
                score_column=score_column,
            )
    return checked


# Every field of a rule defines how it makes the score column or what a card says of it (the domain, for one, is part
# of the formula: the same coefficients clipped to another range score rows differently), except its `provenance`,
# which only documents it, and `indicators`, compared with their defaults filled in. Of the provenance, the
# `response` (what the score means) counts.
_RULE_FIELDS = (
    *(f.name for f in dataclasses.fields(QualityRule) if f.name not in ("provenance", "indicators")),
    "response",
)
# Options naming where a model comes from: a local folder may stand in for a Hub id (`models=`), so only a model
# against none (a tokenizer against whitespace words) is another recipe; the revision goes with the model.
_LOCATION_OPTIONS = ("model", "tokenizer", "revision")


def _differences(given: QualityRule, recorded: QualityRule) -> list[str]:
    """Each field in which `given` makes or describes the score column otherwise than `recorded`, named."""
    found = [
        f"`{name}` (`{shorten(getattr(given, name))}` given, `{shorten(getattr(recorded, name))}` recorded)"
        for name in _RULE_FIELDS
        if getattr(given, name) != getattr(recorded, name)
    ]
    for column in sorted(set(given.indicators) | set(recorded.indicators)):
        a, b = _full_spec(column, given.indicators.get(column)), _full_spec(column, recorded.indicators.get(column))
        if a != b:
            keys = [k for k in {**(a or {}), **(b or {})} if (a or {}).get(k, ...) != (b or {}).get(k, ...)]
            options = [", ".join(f"{k}={shorten((s or {}).get(k, '(none)'))}" for k in keys) for s in (a, b)]
            found.append(f"`indicators.{column}` (`{options[0]}` given, `{options[1]}` recorded)")
    return found


def _unlike_records(rule: QualityRule, records: dict[str, dict[str, Any]]) -> list[str]:
    """How the indicator columns recorded with the data were computed otherwise than `rule` declares them."""
    found = []
    for column in rule.columns:
        ran = (records.get(column) or {}).get("options")
        if not isinstance(ran, dict):
            continue
        for key, value in (_full_spec(column, rule.indicators.get(column)) or {}).items():
            if key not in ran or value == "auto":  # "auto" is resolved when the indicator runs, to what it records
                continue
            if key in _LOCATION_OPTIONS and (key == "revision" or (value is None) == (ran[key] is None)):
                continue
            if to_jsonable(value) != ran[key]:
                found.append(
                    f"`{column}` was computed with `{key}={shorten(ran[key])}`, the rule says `{shorten(value)}`"
                )
    return found


def _full_spec(column: str, spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """`spec` with the indicator's defaults filled in, so that `{}` and the defaults written out compare equal, and
    an offline copy's folder named as the Hub id it stands in for (as the columns record it, see `indicator_record`):
    a rule localised to the offline copies (`offline.localize_rule`) makes the same columns as the rule itself."""
    if spec is None:
        return None
    try:
        full = to_jsonable(get_indicator(column, **spec).spec())
    except (TypeError, ValueError, ImportError):  # not buildable here: compare the options as written
        full = to_jsonable(dict(spec))
    for key in ("model", "tokenizer"):
        copy = offline.copy_of(full[key]) if isinstance(full.get(key), str) else None
        if copy is not None:
            full[key] = copy.model_id
    return full


def _name(rule: QualityRule) -> str:
    return rule.name or rule.formula()


def _disagreement(ds: "Dataset", rule: QualityRule, score_column: str) -> str | None:
    """Why `rule` does not give `ds[score_column]` from the indicator columns, or `None` when it does."""
    missing = [c for c in rule.columns if c not in ds.column_names]
    if missing:
        return f"the data has no {', '.join(f'`{c}`' for c in missing)} column(s), which the rule reads"
    table = ds.select_columns([*rule.columns, score_column]).with_format("arrow")[:]
    columns = {c: table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in table.column_names}
    expected = rule.predict({c: columns[c] for c in rule.columns}, allow_nan=True)
    actual = columns[score_column]
    same = np.isclose(actual, expected, rtol=_RTOL, atol=_ATOL) | (np.isnan(actual) & np.isnan(expected))
    if same.all():
        return None
    first = int(np.flatnonzero(~same)[0])
    return (
        f"its formula gives other scores on {int((~same).sum())} of {len(same)} rows (row {first}: "
        f"{actual[first]:.6g} in the data, {expected[first]:.6g} by the rule)"
    )
