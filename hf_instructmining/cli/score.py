"""`instructmining score`: add indicator columns and `instruct_score` to every row of a dataset."""

from dataclasses import dataclass, field
from difflib import get_close_matches

from ..indicators import available_indicators
from ..indicators.registry import is_indicator_column
from ._io import InputArguments, check_device, check_output, json_object, load_input, make_command_parser, save_output


EXAMPLES = """\
  # the paper's default rule (reward model + UniEval, downloaded from the Hub):
  instructmining score --dataset tatsu-lab/alpaca --output scored.parquet
  # offline: a rule whose models install from the package index (`instructmining env` lists them):
  HF_HUB_OFFLINE=1 instructmining score --dataset data.jsonl --rule instructmining-smollm2-135m-demo \\
      --output scored.parquet
  # a rule file, with a local stand-in for one of its models:
  instructmining score --dataset data.jsonl --rule my_rule.json --models '{"perplexity": "./my-llm"}' \\
      --output scored.parquet
  # indicators only, no rule (add --rule to get both):
  instructmining score --dataset data.jsonl --indicators mtld,output_length --output scored.parquet

Offline (HF_HUB_OFFLINE=1, or no network), a Hub model that is not in the Hugging Face cache is loaded from its
offline copy when one installs from the package index (SmolLM2-135M-Instruct, all-MiniLM-L6-v2); the dataset
card records that it was."""


@dataclass
class ScoreArguments:
    """What to compute and where to write it.

    Args:
        output (`str`):
            Output file (`.parquet`, `.jsonl`, `.json`, `.csv`) or folder (`save_to_disk`).
        rule (`str`, *optional*):
            Built-in rule name, rule JSON file, or folder/Hub repo holding `instructmining_rule.json`;
            `instructmining-llama2-7b` (the paper's) unless `indicators` is given alone.
        indicators (`str`, *optional*):
            Comma-separated indicator columns to compute: alone, instead of a rule (no `instruct_score` then); with
            `rule`, as well as the rule's.
        models (`str`, *optional*):
            JSON object: indicator column or family -> model id or local path, replacing the rule's model (warns).
        device (`str`, *optional*):
            `cpu`, `cuda`, `cuda:1`; a visible GPU by default.
        on_invalid (`str`, *optional*, defaults to `"raise"`):
            Unreadable rows: `raise`, or `nan` (NaN indicators and score, never selected).
        reference (`str`, *optional*):
            Neighbour set for KNN indicators (a dataset file, folder or Hub id); the scored dataset by default.
        num_proc (`int`, *optional*):
            `Dataset.map` worker processes (one GPU each when several are visible).
    """

    output: str = field(metadata={"help": "Output file (.parquet, .jsonl, .json, .csv) or folder."})
    rule: str | None = field(
        default=None,
        metadata={
            "help": "Built-in rule name, rule JSON file, or folder/Hub repo with instructmining_rule.json; "
            "instructmining-llama2-7b unless --indicators is given alone."
        },
    )
    indicators: str | None = field(
        default=None,
        metadata={"help": "Comma-separated indicator columns to compute: alone, instead of a rule; with --rule, too."},
    )
    models: str | None = field(
        default=None, metadata={"help": "JSON: indicator column or family -> model id or path (replaces the rule's)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1; a visible GPU by default."})
    on_invalid: str = field(
        default="raise", metadata={"help": "Unreadable rows: raise, or nan.", "choices": ["raise", "nan"]}
    )
    reference: str | None = field(default=None, metadata={"help": "Neighbour set for KNN indicators."})
    num_proc: int | None = field(default=None, metadata={"help": "Dataset.map worker processes."})

    def __post_init__(self):
        check_output(self.output)
        check_device(self.device)
        if self.indicators is not None and not self.names:
            raise ValueError(
                f"`--indicators {self.indicators!r}` names no indicator: give comma-separated columns such as "
                "`mtld,output_length`, or leave it out to score with a rule."
            )
        unknown = [n for n in self.names if not is_indicator_column(n)]
        if unknown:
            close = get_close_matches(unknown[0], available_indicators(), 1)
            raise ValueError(
                f"`--indicators` names unknown indicator(s) {unknown}"
                f"{f' (did you mean `{close[0]}`?)' if close else ''}; the indicators are {available_indicators()}."
            )

    @property
    def names(self) -> list[str]:
        """The indicator columns of `--indicators` (empty when not given)."""
        return [n.strip() for n in (self.indicators or "").split(",") if n.strip()]

    @property
    def model_map(self) -> dict[str, str]:
        return json_object(self.models, "models") or {}


def make_parser():
    return make_command_parser(
        "score", (InputArguments, ScoreArguments), "Add indicator columns and instruct_score to every row.", EXAMPLES
    )


def main(inputs: InputArguments, args: ScoreArguments) -> dict[str, object]:
    from ..rules import DEFAULT_RULE
    from ..scoring import compute_indicators, resolve_rule, summarize_dataset

    names = args.names or None
    rule = resolve_rule(args.rule or DEFAULT_RULE) if args.rule or not names else None
    ds = load_input(inputs)
    reference = load_input(InputArguments(dataset=args.reference), "--reference") if args.reference else None
    scored = compute_indicators(
        ds,
        names,
        rule=rule,
        models=args.model_map,
        device=args.device,
        on_invalid=args.on_invalid,
        num_proc=args.num_proc,
        reference=reference,
        format=inputs.format,
        column_mapping=inputs.mapping,
    )
    columns = list(dict.fromkeys([*(rule.columns if rule else []), *(names or [])]))
    summary = summarize_dataset(scored, rule, columns=columns)
    rows = {"rule": rule.name or rule.formula() if rule else "- (indicators only)"}
    rows.update({"rows scored": summary.num_rows, "invalid rows": summary.num_invalid})
    for column, mean in summary.means.items():
        rows[f"mean {column}"] = f"{mean:.4g}"
    if summary.predicted_log_eval_loss is not None:
        rows["predicted log eval loss"] = f"{summary.predicted_log_eval_loss:.4f}"
    rows["output"] = save_output(scored, args.output)
    return rows
