"""`instructmining score`: add indicator columns and `instruct_score` to every row of a dataset."""

from dataclasses import dataclass, field

from ._io import InputArguments, json_object, load_input, make_command_parser, save_output


EXAMPLES = """\
  # the paper's default rule (reward model + UniEval, downloaded from the Hub):
  instructmining score --dataset tatsu-lab/alpaca --output scored.parquet
  # a rule file, with a local stand-in for one of its models:
  instructmining score --dataset data.jsonl --rule my_rule.json --models '{"perplexity": "./my-llm"}' \\
      --output scored.parquet
  # indicators only, no rule:
  instructmining score --dataset data.jsonl --indicators mtld,output_length --output scored.jsonl"""


@dataclass
class ScoreArguments:
    """What to compute and where to write it.

    Args:
        output (`str`):
            Output file (`.parquet`, `.jsonl`, `.json`, `.csv`) or folder (`save_to_disk`).
        rule (`str`, *optional*, defaults to `"instructmining-llama2-7b"`):
            Built-in rule name, rule JSON file, or folder/Hub repo holding `instructmining_rule.json`.
        indicators (`str`, *optional*):
            Comma-separated indicator columns to compute instead of a rule (no `instruct_score` then).
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
    rule: str = field(
        default="instructmining-llama2-7b",
        metadata={"help": "Built-in rule name, rule JSON file, or folder/Hub repo with instructmining_rule.json."},
    )
    indicators: str | None = field(
        default=None, metadata={"help": "Comma-separated indicator columns to compute instead of a rule."}
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

    @property
    def model_map(self) -> dict[str, str]:
        return json_object(self.models, "models") or {}


def make_parser():
    return make_command_parser(
        "score", (InputArguments, ScoreArguments), "Add indicator columns and instruct_score to every row.", EXAMPLES
    )


def main(inputs: InputArguments, args: ScoreArguments) -> dict[str, object]:
    from ..scoring import compute_indicators, resolve_rule
    from ..summary import summarize_dataset

    ds = load_input(inputs)
    reference = load_input(InputArguments(dataset=args.reference)) if args.reference else None
    names = [n.strip() for n in args.indicators.split(",") if n.strip()] if args.indicators else None
    rule = None if names else resolve_rule(args.rule)
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
    summary = summarize_dataset(scored, rule, columns=names)
    rows = {"rows scored": summary.num_rows, "invalid rows": summary.num_invalid}
    for column, mean in summary.means.items():
        rows[f"mean {column}"] = f"{mean:.4g}"
    if summary.predicted_log_eval_loss is not None:
        rows["predicted log eval loss"] = f"{summary.predicted_log_eval_loss:.4f}"
    rows["output"] = save_output(scored, args.output)
    return rows
