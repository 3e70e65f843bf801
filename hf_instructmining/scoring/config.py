"""`ScoreConfig`: how a dataset is scored. Apart from the scorer so that the planning code and the CLI import it
without importing the scorer."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..formats import FORMATS
from ..rules import DEFAULT_RULE


# The column a rule's prediction is written to.
SCORE_COLUMN = "instruct_score"


@dataclass
class ScoreConfig:
    """How to score a dataset: which rule, which models stand in for the rule's, where to run.

    Args:
        rule (`str`, *optional*, defaults to `"instructmining-llama2-7b"`): a built-in rule name, a rule JSON file,
            or a folder or Hub repo holding `instructmining_rule.json`.
        models (`dict[str, str]`, *optional*): indicator column (`"reward"`, `"unieval_coherence"`) or family
            (`"unieval"`, `"knn"`) -> model id or local path, replacing the rule's model for it. The rule's
            coefficients were fitted with its own models: replacing one warns that scores are not calibrated.
        device (`str`, *optional*): `"cpu"`, `"cuda"`, `"cuda:1"`; a GPU when one is visible by default.
        on_invalid (`str`, *optional*, defaults to `"raise"`): rows that cannot be read: `"raise"`, or `"nan"` to
            give them NaN indicators and a NaN score (never selected).
        format (`str`, *optional*): force the input layout (`"alpaca"`, `"prompt_completion"`, `"messages"`).
        column_mapping (`dict[str, str]`, *optional*): role -> column, e.g. `{"output": "answer"}`.
        reference (`str`, *optional*): the neighbour set of KNN indicators (a dataset file, folder or Hub id);
            without it [`compute_indicators`] uses the scored dataset itself.
    """

    rule: str = field(
        default=DEFAULT_RULE,
        metadata={"help": "Built-in rule name, rule JSON file, or folder/Hub repo with instructmining_rule.json."},
    )
    models: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Indicator column or family -> model id or path, replacing the rule's model (warns)."},
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1; a visible GPU by default."})
    on_invalid: str = field(
        default="raise",
        metadata={"help": "Unreadable rows: raise, or nan (NaN indicators and score).", "choices": ["raise", "nan"]},
    )
    format: str | None = field(default=None, metadata={"help": "Force the input layout.", "choices": list(FORMATS)})
    column_mapping: dict[str, str] | None = field(
        default=None, metadata={"help": "Role -> column, e.g. {'output': 'answer'}."}
    )
    reference: str | None = field(
        default=None, metadata={"help": "Neighbour set for KNN indicators (dataset file, folder or Hub id)."}
    )

    def __post_init__(self):
        if self.on_invalid not in ("raise", "nan"):
            raise ValueError(f"`on_invalid` must be `'raise'` or `'nan'`, got `{self.on_invalid!r}`.")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"Unknown format `{self.format!r}`; expected one of {list(FORMATS)}.")
        if not isinstance(self.models, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.models.items()
        ):
            raise TypeError(
                "`models` must map indicator columns or families to model ids or local paths (strings), got "
                f"`{self.models!r}`; pass names, not loaded models, so that scorers pickle and fingerprint cheaply."
            )
        self.models = dict(self.models)
