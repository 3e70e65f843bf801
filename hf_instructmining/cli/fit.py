"""`instructmining fit`: fit a quality rule (OLS of log eval loss on mean indicators) from a label store."""

import os
from dataclasses import dataclass, field

from ._io import make_command_parser


EXAMPLES = """\
  instructmining fit --store labels.jsonl --output my_rule.json
  instructmining fit --store labels.jsonl --selection bic --name llama2-7b-selfinstruct --output my_rule.json
  # a rule for ROUGE-L of generated answers (label with --metrics): fits log(1 - eval_rougeL)
  instructmining fit --store labels.jsonl --target eval_rougeL --higher_is_better true --output rouge_rule.json"""


@dataclass
class FitArguments:
    """What to fit and where the rule goes.

    Args:
        store (`str`):
            The label store written by `instructmining label` (or by `EvalLossCallback`).
        output (`str`):
            Where to write the rule JSON.
        target (`str`, *optional*, defaults to `"eval_loss"`):
            The label to fit: `eval_loss`, a named eval loss, or a generated-answer score such as `eval_rougeL`.
        higher_is_better (`bool`, *optional*):
            `true` fits log(1 - target) for a score in [0, 1] where higher is better; `false` fits log(target).
            Required for a generated-answer score.
        indicators (`str`, *optional*):
            Comma-separated candidate indicator columns; every one in the store by default.
        selection (`str`, *optional*, defaults to `"all"`):
            `all`, `backward` (p-value backward elimination) or `bic` (best subset by BIC).
        alpha (`float`, *optional*, defaults to `0.05`):
            p-value threshold of backward elimination.
        cv_folds (`int`, *optional*, defaults to `5`):
            Folds of the cross-validated R squared.
        name (`str`, *optional*):
            The rule's name.
    """

    store: str = field(default=None, metadata={"help": "Label store written by `instructmining label`."})
    output: str = field(default=None, metadata={"help": "Where to write the rule JSON."})
    target: str = field(default="eval_loss", metadata={"help": "The label to fit, e.g. eval_loss or eval_rougeL."})
    higher_is_better: bool | None = field(
        default=None, metadata={"help": "true: fit log(1 - target) for a score where higher is better."}
    )
    indicators: str | None = field(default=None, metadata={"help": "Comma-separated candidate indicator columns."})
    selection: str = field(
        default="all", metadata={"help": "Indicator selection.", "choices": ["all", "backward", "bic"]}
    )
    alpha: float = field(default=0.05, metadata={"help": "p-value threshold of backward elimination."})
    cv_folds: int = field(default=5, metadata={"help": "Folds of the cross-validated R squared."})
    name: str | None = field(default=None, metadata={"help": "The rule's name."})

    def __post_init__(self):
        for name in ("store", "output"):
            if not getattr(self, name):
                raise ValueError(f"`--{name}` is required.")


def make_parser():
    return make_command_parser(
        "fit", (FitArguments,), "Fit a quality rule from labelled subsets (OLS with full statistics).", EXAMPLES
    )


def main(args: FitArguments) -> dict[str, object]:
    from ..fitting import fit_rule
    from ..labeling import LabelStore

    if not os.path.isfile(args.store):
        raise FileNotFoundError(f"No label store `{args.store}` (`--store`): write one with `instructmining label`.")
    store = LabelStore(args.store)
    if not store.labels():
        raise ValueError(
            f"The label store `{args.store}` (`--store`) has no finished subsets to fit on: label some with "
            "`instructmining label --store ...` first."
        )
    indicators = [c.strip() for c in args.indicators.split(",")] if args.indicators else None
    result = fit_rule(
        store,
        target=args.target,
        higher_is_better=args.higher_is_better,
        indicators=indicators,
        selection=args.selection,
        alpha=args.alpha,
        cv_folds=args.cv_folds,
        name=args.name,
    )
    print(result.report())
    fit = result.rule.provenance.get("fit", {})
    return {
        "subsets": fit.get("n_subsets"),
        "R squared": f"{fit['r_squared']:.3f}" if fit.get("r_squared") is not None else "-",
        "formula": result.rule.formula(),
        "rule": result.rule.save(args.output),
    }
