"""The "How to reproduce" code of a dataset card, generated from the calls recorded with the data.

`compute_indicators` records its options on the score column and every `select_*` call records itself on the
selection's `row_index` (see [`~hf_instructmining.scoring.provenance`]). The recipe repeats those calls, so it
is the code that made the data: a KNN rule is scored with `compute_indicators` (one batch of `Dataset.map`
cannot define neighbours), and a selection keeps its `deduplicate=True`. A recorded selection is replayed on the
scored rows before it is written into a card; one that does not give the same rows (or none recorded) is not
presented as the code that chose them.
"""

import json
import logging
from typing import TYPE_CHECKING, Any

from ..scoring.provenance import read


if TYPE_CHECKING:
    from datasets import Dataset

    from ..rules import QualityRule
    from .config import PushConfig


logger = logging.getLogger(__name__)

_SELECTIONS = {"select_top_k": "k", "select_fraction": "fraction", "select_threshold": "threshold"}
_WIDTH = 119


def reproduce(
    scored: "Dataset",
    rule: "QualityRule | None",
    selection: "Dataset | None",
    config: "PushConfig",
    where: str,
) -> str:
    """Python code that rebuilds `scored` (and `selection`) from the source data, from what the data records.

    Args:
        scored (`datasets.Dataset`): the scored rows, with `row_index`.
        rule ([`QualityRule`], *optional*): the rule that made the scores (checked against the data before).
        selection (`datasets.Dataset`, *optional*): the selected rows.
        config ([`PushConfig`]): `source_dataset` names the data that was scored, when it is on the Hub.
        where (`str`): the repo id (or a placeholder) that holds the rule.

    Returns:
        `str`: the code, for the card's "How to reproduce" block.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_instructmining import QualityRule, compute_indicators, select_top_k
    >>> from hf_instructmining.hub import PushConfig
    >>> from hf_instructmining.hub.recipe import reproduce
    >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="toy")
    >>> ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["x y", "y z z", "x x x x"]})
    >>> scored = compute_indicators(ds, rule=rule).add_column("row_index", [0, 1, 2])
    >>> print(reproduce(scored, rule, select_top_k(scored, 2, deduplicate=True), PushConfig(), "me/data"))
    from hf_instructmining import QualityRule, compute_indicators, select_top_k
    <BLANKLINE>
    rule = QualityRule.from_pretrained("me/data", repo_type="dataset")
    ds = ...  # the data that was scored
    scored = compute_indicators(ds, rule=rule)
    selected = select_top_k(scored, 2, deduplicate=True)
    ```
    """
    made = read(scored, config.score_column)
    calls = _replayed(scored, selection, config.score_column) if selection is not None else None
    functions = ["QualityRule", "compute_indicators", *dict.fromkeys(c["function"] for c in calls or [])]
    lines = (
        ["from datasets import load_dataset"] if config.source_dataset or (selection is not None and not calls) else []
    )
    lines += [f"from hf_instructmining import {', '.join(sorted(functions))}", ""]
    lines.append(
        f'rule = QualityRule.from_pretrained("{where}", repo_type="dataset")'
        if rule is not None
        else "rule = ...  # the rule was not recorded with this dataset"
    )
    lines.append(
        f'ds = load_dataset("{config.source_dataset}", split="train")'
        if config.source_dataset
        else "ds = ...  # the data that was scored"
    )
    lines += _scoring_lines(made)
    if selection is not None and calls:
        source = "scored"
        for call in calls:
            options = {k: v for k, v in call.items() if k != "function"}
            value = options.pop(_SELECTIONS[call["function"]])
            lines.append(_call(f"selected = {call['function']}", [source, repr(value)], options))
            source = "selected"
    elif selection is not None:
        lines.append("# How these rows were selected was not recorded with them: they are the `selected` config.")
        lines.append(f'selected = load_dataset("{where}", "selected", split="train")')
    return "\n".join(lines)


def _scoring_lines(made) -> list[str]:
    if made.scoring is None:
        return [
            "# How the scores were computed was not recorded with the data: this computes the rule's indicators with",
            "# the models the rule names, over the whole dataset (KNN neighbours are the other rows).",
            "scored = compute_indicators(ds, rule=rule)",
        ]
    options = dict(made.scoring)
    names = options.pop("names", [])
    if options.get("reference") is True:
        options["reference"] = _Placeholder("...  # the neighbour set given to `compute_indicators`, not recorded")
    copies = sorted({r["offline_copy"]["of"] for r in made.indicators.values() if r.get("offline_copy")})
    lines = []
    if copies:
        lines += [f"# Offline copies stood in for {', '.join(copies)} (see the indicator table):"]
        lines += [
            "# run with HF_HUB_OFFLINE=1, without those models in the Hugging Face cache, to load the same copies."
        ]
    arguments = ["ds", _literal(names)] if names else ["ds"]
    return [*lines, _call("scored = compute_indicators", arguments, {"rule": _Placeholder("rule"), **options})]


class _Placeholder(str):
    """Code written as is, not as a literal."""


def _call(head: str, arguments: list[str], options: dict[str, Any]) -> str:
    """`head(arguments, key=value, ...)` on one line, or one argument per line when it does not fit."""
    parts = [*arguments, *(f"{k}={_literal(v)}" for k, v in options.items())]
    line = f"{head}({', '.join(parts)})"
    commented = any(isinstance(v, _Placeholder) and "#" in v for v in options.values())
    if len(line) <= _WIDTH and not commented:
        return line
    # A comment closes its line: the comma goes before it.
    lines = [f"    {p}," if "  # " not in p else "    {},  # {}".format(*p.split("  # ", 1)) for p in parts]
    return "\n".join([f"{head}(", *lines, ")"])


def _literal(value: Any) -> str:
    """A recorded (JSON) value as Python source, strings in double quotes as elsewhere in the card."""
    if isinstance(value, _Placeholder):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{', '.join(_literal(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _replayed(scored: "Dataset", selection: "Dataset", score_column: str) -> list[dict[str, Any]] | None:
    """The selection calls recorded on `selection`, when replaying them on `scored` gives exactly its rows."""
    from .. import selection as selecting

    calls = read(selection, score_column).selection
    if not calls:
        return None
    rows = scored
    try:
        for call in calls:
            options = {k: v for k, v in call.items() if k != "function"}
            value = options.pop(_SELECTIONS[call["function"]])
            rows = getattr(selecting, call["function"])(rows, value, **options)
    except (KeyError, TypeError, ValueError) as err:
        logger.info("The recorded selection calls %s do not run on the scored rows (%s).", calls, err)
        return None
    if list(rows["row_index"]) != list(selection["row_index"]):
        logger.info("The recorded selection calls %s choose other rows from the scored rows.", calls)
        return None
    return calls
