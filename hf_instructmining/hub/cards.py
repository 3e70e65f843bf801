"""Dataset, rule and model cards rendered from the Jinja templates in `model_card_templates/`.

Numbers go in the YAML metadata (an `instructmining:` block that tools can read back with `DatasetCard.load`),
explanations in the body. The body's generated part sits between two HTML comment markers; everything else in
an existing card (hand-written sections, YAML keys we do not set) survives [`merge_card`].
"""

import logging
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import to_jsonable
from ..rules import EVAL_LOSS_RESPONSE
from ..rules.clipping import clip_counts
from ..rules.rule import describe_outside_domain
from .recipe import reproduce


if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard

    from ..rules import QualityRule
    from .config import PushConfig


logger = logging.getLogger(__name__)

BEGIN = "<!-- instructmining:generated:start"
END = "<!-- instructmining:generated:end -->"
TAGS = ["instructmining", "instruction-tuning", "data-selection"]
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
_SIZES += [(10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B")]
_SIZES += [(10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
_FIT_KEYS = ("n_subsets", "r_squared", "adj_r_squared", "f_statistic", "f_pvalue", "aic", "bic", "cv_r_squared")
_FIT_LABELS = ("R²", "adjusted R²", "F", "p(F)", "AIC", "BIC", "cross-validated R²")


def build_dataset_card(
    scored: "Dataset",
    *,
    rule: "QualityRule | None" = None,
    selection: "Dataset | None" = None,
    search: Any = None,
    config: "PushConfig | None" = None,
    repo_id: str | None = None,
) -> "DatasetCard":
    """Render the dataset card of a scored dataset (and its rule, selection and search), offline.

    Args:
        scored (`datasets.Dataset`): every scored row (with `row_index`).
        rule (`QualityRule`, *optional*): the rule that made the scores.
        selection (`datasets.Dataset`, *optional*): the selected rows.
        search (`SearchResult`, *optional*): the subset-size search.
        config (`PushConfig`, *optional*): license, source dataset, title, score column.
        repo_id (`str`, *optional*): the repo, for the commands in the card (a placeholder when `None`).

    Returns:
        `huggingface_hub.DatasetCard`: the card; `card.data.instructmining` holds the numbers.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining.hub.cards import build_dataset_card
    >>> ds = Dataset.from_dict({"instruction": ["a", "b"], "output": ["x", "y"], "instruct_score": [0.3, 0.1]})
    >>> card = build_dataset_card(ds)
    >>> card.data.instructmining["score_statistics"]["scored"]["min"]
    0.1
    ```
    """
    from huggingface_hub import DatasetCardData

    from .._version import __version__
    from .config import PushConfig

    config = config or PushConfig()
    column = config.score_column
    where = repo_id or "<repo_id>"
    indicators = indicator_provenance(scored, rule)
    statistics = {"scored": _statistics(scored[column])}
    if selection is not None:
        statistics["selected"] = _statistics(selection[column])
    block = {
        "package_version": __version__,
        "score_column": column,
        "target": "log_eval_loss" if rule is None or rule.response == EVAL_LOSS_RESPONSE else rule.response,
        "lower_is_better": True,
        "rule": rule_block(rule),
        "indicators": indicators or None,
        "score_statistics": statistics,
        "selection": _selection_block(scored, selection, column),
        "search": _search_block(search),
        "clipped": _clipped_block(scored, rule),
    }
    configs = [{"config_name": "scored", "data_files": [{"split": "train", "path": "scored/train-*"}]}]
    if selection is not None:
        configs.append({"config_name": "selected", "data_files": [{"split": "train", "path": "selected/train-*"}]})
    license = config.license or getattr(scored.info, "license", None) or None
    data = DatasetCardData(
        license=license,
        pretty_name=config.pretty_name,
        task_categories=["text-generation"],
        tags=list(TAGS),
        source_datasets=[config.source_dataset] if config.source_dataset else None,
        size_categories=[_size_category(len(scored))],
        configs=configs,
        instructmining={k: v for k, v in to_jsonable(block).items() if v is not None},
    )
    pictures_ = pictures(scored, rule, search)
    kwargs = {
        "title": config.pretty_name,
        "summary": _summary(scored, rule, selection, config),
        "score_column": column,
        "formula": f"`{rule.formula()}`" if rule is not None else None,
        **response_kwargs(rule),
        "coefficient_table": coefficient_table(rule) if rule is not None else None,
        "fit_summary": fit_summary(rule) if rule is not None else None,
        "domain_note": domain_note(scored, rule),
        "indicator_table": _indicator_table(indicators),
        "data_summary": _data_summary(scored, selection, rule, column),
        "load_snippet": _load_snippet(where, selection is not None),
        "statistics_table": _table(
            ["rows", "n", "without a score", "mean", "std", "min", "max"],
            [
                [name, *(fmt(s[k]) for k in ("n", "n_nan", "mean", "std", "min", "max"))]
                for name, s in statistics.items()
            ],
        ),
        "pictures": [{"path": path, "alt": name.replace("_", " ")} for name, path in pictures_.items()],
        "search_summary": _search_summary(search),
        "reproduce": reproduce(scored, rule, selection, config, where),
        "package_version": __version__,
        "notes": config.notes,
    }
    return render("dataset_card.md", "dataset", data, kwargs)


def merge_card(new, old_text: str):
    """Return `new` with the hand-written parts of `old_text` kept.

    YAML keys of the old card that the new one does not set are kept; keys it sets are replaced. In the body, the
    old generated block is replaced by the new one and everything around it is kept. An old card without a
    generated block keeps its whole body, below the new block.

    Example:

    ```py
    >>> from huggingface_hub import DatasetCard
    >>> from hf_instructmining.hub.cards import merge_card
    >>> new = DatasetCard("---\\nlicense: mit\\n---\\n<!-- instructmining:generated:start -->\\nnew\\n<!-- instructmining:generated:end -->\\n")
    >>> old = "---\\nlanguage: en\\n---\\n<!-- instructmining:generated:start -->\\nold\\n<!-- instructmining:generated:end -->\\nmine\\n"
    >>> print(merge_card(new, old).text)
    <!-- instructmining:generated:start -->
    new
    <!-- instructmining:generated:end -->
    mine
    <BLANKLINE>
    """
    old = load_card(old_text, "model" if type(new).__name__ == "ModelCard" else "dataset")
    merged = type(new)(old_text)
    data = old.data.to_dict()
    data.update(new.data.to_dict())
    merged.data = type(new.data)(**data)
    block = _generated_block(new.text)
    if block is None:
        merged.text = new.text
    elif (old_block := _generated_block(old.text)) is not None:
        merged.text = old.text.replace(old_block, block, 1)
    else:
        merged.text = new.text[: new.text.index(block) + len(block)] + "\n\n" + old.text.lstrip("\n")
    return merged


def load_card(text: str, repo_type: str):
    """Parse card text as a `DatasetCard` or `ModelCard` (tolerating metadata the Hub would reject)."""
    from huggingface_hub import DatasetCard, ModelCard

    return (DatasetCard if repo_type == "dataset" else ModelCard)(text, ignore_metadata_errors=True)


def pictures(scored: "Dataset", rule: "QualityRule | None", search: Any) -> dict[str, str]:
    """The pictures a dataset folder holds: name -> path inside the folder.

    Each indicator column against the score for a few indicators, their correlation heatmap (score included) for
    more; see [`~hf_instructmining.plots.FEW_INDICATORS`].
    """
    from ..plots import FEW_INDICATORS

    found = {"score_histogram": "images/score_histogram.png"}
    count = len(indicator_columns(scored, rule))
    if 0 < count <= FEW_INDICATORS:
        found["indicators_against_score"] = "images/indicators_against_score.png"
    elif count > FEW_INDICATORS:
        found["indicator_correlations"] = "images/indicator_correlations.png"
    if search is not None:
        found["search_curve"] = "images/search_curve.png"
    return found


def indicator_columns(scored: "Dataset", rule: "QualityRule | None") -> list[str]:
    """The indicator columns of a scored dataset: the rule's first, then any other column named like an indicator."""
    from ..indicators.registry import indicator_columns as known_columns

    known = known_columns(scored.column_names)
    ordered = [c for c in rule.columns if c in scored.column_names] if rule is not None else []
    return ordered + [c for c in known if c not in ordered]


def picture_columns(scored: "Dataset", rule: "QualityRule | None", columns: list[str]) -> dict[str, np.ndarray]:
    """The values to draw for `columns`: each column the rule reads as the score used it (clipped into the rule's
    range, on its scale; labelled so where that changed a value), so that a term the clipping made constant shows no
    correlation with the score; other columns as they are."""
    table = scored.select_columns(columns).with_format("arrow")[:]
    values = {c: table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in columns}
    used, below, above = (
        rule.used_values(values) if rule is not None and set(rule.columns) <= set(values) else ({},) * 3
    )
    drawn = {}
    for column in columns:
        if column not in used:
            drawn[column] = values[column]
            continue
        transform = rule.transforms.get(column)
        label = f"{transform}({column})" if transform else column
        drawn[f"{label} (clipped)" if (below[column] | above[column]).any() else label] = used[column]
    return drawn


def indicator_provenance(scored: "Dataset", rule: "QualityRule | None") -> dict[str, dict[str, Any]]:
    """How each indicator column of the data was made, for the card's `instructmining.indicators` block.

    A column recorded by `compute_indicators` gets its record: the options it ran with, `recorded: true` and the
    `offline_copy` that stood in for a Hub model, if any. Otherwise a column the rule reads gets the rule's
    declaration of it, with `recorded: false`; other columns are left out, since nothing says how they were made.
    """
    from ..scoring.provenance import read

    recorded = read(scored).indicators
    block: dict[str, dict[str, Any]] = {}
    for column in indicator_columns(scored, rule):
        if column in recorded:
            entry = {**recorded[column]["options"], "recorded": True}
            if "offline_copy" in recorded[column]:
                entry["offline_copy"] = recorded[column]["offline_copy"]
            block[column] = entry
        elif rule is not None and column in rule.indicators:
            block[column] = {**rule.indicators[column], "recorded": False}
    return block


def _indicator_table(indicators: dict[str, dict[str, Any]]) -> str | None:
    """A Markdown table of how each indicator column was computed, with a note on what was not recorded."""
    if not indicators:
        return None
    rows = []
    for column, entry in indicators.items():
        model = entry.get("model") or entry.get("tokenizer")
        where = f"`{model}`" + (f" @ `{entry['revision']}`" if entry.get("revision") else "") if model else "–"
        options = ", ".join(
            f"`{k}={v}`"
            for k, v in entry.items()
            if k not in ("model", "tokenizer", "revision", "recorded", "offline_copy") and v is not None
        )
        copy = entry.get("offline_copy")
        if copy:
            source = f"offline copy ({copy['package']} {copy['version']}): {copy['note']}"
        else:
            source = "recorded with the data" if entry["recorded"] else "declared by the rule, not recorded"
        rows.append([f"`{column}`", where, options or "–", source])
    table = _table(["column", "model", "options", "how it is known"], rows)
    if not all(entry["recorded"] for entry in indicators.values()):
        table += (
            "\n\nColumns marked *declared by the rule* carry no record of how they were computed (the data was "
            "scored with `Dataset.map`, or went through a format without one, such as JSON Lines): the models shown "
            "are the ones the rule names."
        )
    return table


def coefficient_table(rule: "QualityRule") -> str:
    """A Markdown table of the rule's terms; with standard errors, p-values and VIFs when it was fitted, and the range
    each indicator is clipped to when the rule has a `domain`."""
    table = (rule.provenance.get("fit") or {}).get("table") or {}
    header = ["term", "coefficient", "model"]
    if table:
        header[2:2] = ["std. error", "p-value", "VIF"]
    if rule.domain:
        header.append("clipped to (the range fitted on)")
    rows = []
    for column, coef in [("intercept", rule.intercept), *rule.coefficients.items()]:
        spec = rule.indicators.get(column, {})
        model = spec.get("model") or spec.get("tokenizer")
        model = f"`{model}`" + (f" @ `{spec['revision']}`" if spec.get("revision") else "") if model else ""
        row = [f"`{rule.term(column) if column in rule.coefficients else column}`", fmt(coef), model]
        if table:
            stats = table.get(column, {})
            row[2:2] = [fmt(stats.get(k)) for k in ("std_err", "p_value", "vif")]
        if rule.domain:
            bounds = rule.domain.get(column)
            row.append(f"{fmt(bounds[0])} to {fmt(bounds[1])}" if bounds else "")
        rows.append(row)
    return _table(header, rows)


def domain_note(scored, rule: "QualityRule | None") -> str | None:
    """A paragraph naming the indicators whose mean over `scored` lies outside the range the rule was fitted on (and
    the terms that rank nothing), then a table of how many rows of each indicator the rule clipped into that range."""
    outside = describe_outside_domain(rule, scored) if rule is not None else None
    parts = [f"**Outside the rule's range.** {outside}"] if outside else []
    counts = clip_counts(rule, scored) if rule is not None and rule.domain else {}
    if counts:
        rows = [
            [
                f"`{rule.term(column)}`",
                f"{fmt(rule.domain[column][0])} to {fmt(rule.domain[column][1])}" if column in rule.domain else "–",
                f"{count.below} of {count.n}",
                f"{count.above} of {count.n}",
                "the same value on every row: ranks nothing" if count.ranks_nothing else "ranks rows",
            ]
            for column, count in counts.items()
        ]
        header = [
            "indicator",
            "range fitted on",
            "rows below, raised to it",
            "rows above, lowered to it",
            "in the score",
        ]
        parts.append("Rows whose indicator value the rule clipped into its range:\n\n" + _table(header, rows))
    return "\n\n".join(parts) or None


def response_kwargs(rule: "QualityRule | None") -> dict[str, str | None]:
    """What a card says a rule predicts when it is not the log eval loss: `response`, the fitted response in
    backticks, and `response_note`, a sentence on its label; both `None` for an eval-loss rule (or no rule)."""
    if rule is None or rule.response == EVAL_LOSS_RESPONSE:
        return {"response": None, "response_note": None}
    fit = rule.provenance.get("fit") or {}
    label = fit.get("label")
    if fit.get("higher_is_better") and label:
        note = (
            f"The rule was fitted to `{label}`, a score where higher is better, rather than to the evaluation loss: "
            f"it predicts the log of one minus the score, so that lower is better as for a loss."
        )
    else:
        note = f"The rule was fitted to `{rule.response}` rather than to the log evaluation loss."
    return {"response": f"`{rule.response}`", "response_note": note}


def fit_summary(rule: "QualityRule") -> str | None:
    """One paragraph of the fit's statistics, or `None` for a rule that was not fitted here."""
    fit = rule.provenance.get("fit")
    if not fit:
        return None
    parts = [f"{label} = {fmt(fit.get(key))}" for key, label in zip(_FIT_KEYS[1:], _FIT_LABELS, strict=True)]
    response = "log eval loss" if rule.response == EVAL_LOSS_RESPONSE else f"`{rule.response}`"
    return (
        f"Fitted by ordinary least squares of {response} on the mean indicator values of "
        f"{fmt(fit.get('n_subsets'))} finetuned subsets (indicator selection: `{fit.get('selection', 'all')}`): "
        + ", ".join(parts)
        + "."
    )


# -- pieces --------------------------------------------------------------------------------------------------------


def template_folder():
    """The card templates of the code that runs.

    They live in `model_card_templates/` at the top of the repository. In a source checkout (installed editable, or
    on `PYTHONPATH`) that folder sits beside the package; a wheel ships it as the package
    `hf_instructmining.model_card_templates` (`setup.py` maps the folder to that name).
    """
    checkout = Path(__file__).resolve().parents[2] / "model_card_templates"
    if (checkout / "__init__.py").is_file():
        return checkout
    return resources.files("hf_instructmining.model_card_templates")


def render(template: str, repo_type: str, data, kwargs: dict):
    """Render a template of `model_card_templates/` into a `DatasetCard` or `ModelCard`."""
    from huggingface_hub import DatasetCard, ModelCard

    card_class = DatasetCard if repo_type == "dataset" else ModelCard
    source = template_folder().joinpath(template)
    with resources.as_file(source) as path:
        return card_class.from_template(data, template_path=str(path), **kwargs)


def _statistics(values) -> dict[str, float | int | None]:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    stats: dict[str, float | int | None] = {"n": int(array.size), "n_nan": int(array.size - finite.size)}
    for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        stats[name] = _round(fn(finite)) if finite.size else None
    return stats


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


def fmt(value: Any) -> str:
    """A number for a Markdown table: 4 significant digits, `–` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _size_category(n: int) -> str:
    return next((label for bound, label in _SIZES if n < bound), "n>1T")


def rule_block(rule) -> dict | None:
    """The rule's numbers for a card's `instructmining:` block."""
    if rule is None:
        return None
    fit = rule.provenance.get("fit") or {}
    block = {
        "name": rule.name,
        "intercept": rule.intercept,
        "coefficients": dict(rule.coefficients),
        "source": rule.provenance.get("source"),
        "fit": {k: fit[k] for k in (*_FIT_KEYS, "selection") if k in fit} or None,
        "target": None if rule.response == EVAL_LOSS_RESPONSE else rule.response,
        "domain": {c: list(bounds) for c, bounds in rule.domain.items()} if rule.domain else None,
    }
    return {k: v for k, v in block.items() if v is not None}


def _clipped_block(scored, rule) -> dict | None:
    """Per column of a rule with a range: the rows it clipped below and above, and whether the term ranks nothing."""
    counts = clip_counts(rule, scored) if rule is not None and rule.domain else {}
    return {column: count.to_dict() for column, count in counts.items()} or None


def _selection_block(scored, selection, column: str) -> dict | None:
    if selection is None:
        return None
    scores = np.asarray(selection[column], dtype=float)
    return {
        "size": len(selection),
        "fraction": _round(len(selection) / len(scored)) if len(scored) else None,
        "max_score": _round(np.nanmax(scores)) if np.isfinite(scores).any() else None,
    }


def search_dict(search) -> dict:
    """A search result as a plain dict (`SearchResult.to_dict()`, or a dict as is)."""
    return search.to_dict() if hasattr(search, "to_dict") else dict(search)


def _search_block(search) -> dict | None:
    if search is None:
        return None
    data = search_dict(search)
    trace = data.get("trace") or []
    return {"best_k": data.get("best_k"), "best_loss": data.get("best_loss"), "num_trials": len(trace)}


# `SearchConfig.method` in words; results saved before the field existed say only that a search ran.
_SEARCHERS = {"bracket": "A bracketing search over k", "blendsearch": "FLAML BlendSearch"}


def _search_summary(search) -> str | None:
    if search is None:
        return None
    block = _search_block(search)
    trace = search_dict(search).get("trace") or []
    rows = [[str(t.get("trial")), str(t.get("k")), fmt(t.get("loss")), str(t.get("selection", "rule"))] for t in trace]
    searcher = _SEARCHERS.get(search_dict(search).get("method"), "A subset-size search")
    return (
        f"{searcher} tried {block['num_trials']} subset sizes, finetuning on the top k rows each time; the "
        f"lowest eval loss, {fmt(block['best_loss'])}, came with k = {block['best_k']}. The whole trace is in "
        "`instructmining_search.json`.\n\n" + _table(["trial", "k", "eval loss", "rows"], rows)
    )


def _summary(scored, rule, selection, config) -> str:
    text = f"{len(scored)} instruction–response rows scored with InstructMining"
    text += f" rule `{rule.name}`" if rule is not None and rule.name else ""
    text += (
        f", from [`{config.source_dataset}`](https://huggingface.co/datasets/{config.source_dataset})"
        if config.source_dataset
        else ""
    )
    if selection is not None:
        text += f", and the {len(selection)} best-scored rows selected for finetuning"
    return text + "."


def _data_summary(scored, selection, rule, column: str) -> str:
    indicators = indicator_columns(scored, rule)
    listed = ", ".join(f"`{c}`" for c in indicators) or "none recorded"
    lines = [
        f"- `scored`: all {len(scored)} rows with their indicator columns ({listed}), `{column}` and `row_index` "
        "(the row's position in the scored data)."
    ]
    if selection is not None:
        share = f" ({100 * len(selection) / len(scored):.1f}%)" if len(scored) else ""
        lines.append(
            f"- `selected`: the {len(selection)} best-scored rows{share}, best first; `row_index` links each to `scored`."
        )
    return "\n".join(lines)


def _load_snippet(where: str, has_selection: bool) -> str:
    lines = ["from datasets import load_dataset", ""]
    if has_selection:
        lines.append(f'selected = load_dataset("{where}", "selected", split="train")')
    lines.append(f'scored = load_dataset("{where}", "scored", split="train")')
    return "\n".join(lines)


def _generated_block(text: str) -> str | None:
    start = text.find(BEGIN)
    end = text.find(END, start)
    return None if start < 0 or end < 0 else text[start : end + len(END)]
