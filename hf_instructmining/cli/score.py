"""`instructmining score`: add indicator columns and `instruct_score` to every row of a dataset."""

import os
from dataclasses import dataclass, field
from difflib import get_close_matches

from ..indicators import available_indicators
from ..indicators.registry import is_indicator_column
from ..rules import DEFAULT_RULE
from ..scoring.checkpoint import DEFAULT_SHARD_SIZE
from ..scoring.config import ScoreConfig
from ._io import InputArguments, check_output, compute_with, load_input, make_command_parser, save_output
from ._summary import check_group_by, print_groups, summary_rows


EXAMPLES = """\
  # the paper's default rule (reward model + UniEval, downloaded from the Hub):
  instructmining score --dataset tatsu-lab/alpaca --output scored.parquet
  # offline: a rule whose models install from the package index (`instructmining env` lists them):
  HF_HUB_OFFLINE=1 instructmining score --dataset data.jsonl --rule instructmining-smollm2-135m \\
      --output scored.parquet
  # a rule file, with a local stand-in for one of its models:
  instructmining score --dataset data.jsonl --rule my_rule.json --models '{"perplexity": "./my-llm"}' \\
      --output scored.parquet
  # indicators only, no rule (add --rule to get both):
  instructmining score --dataset data.jsonl --indicators mtld,output_length --output scored.parquet
  # the mean score and the rows the rule clipped, per model that wrote the answers:
  instructmining score --dataset answers.jsonl --rule instructmining-smollm2-135m --group_by generator \\
      --output scored.parquet
  # a long job that resumes where it stopped when run again (finished rows are kept every 2,048 rows):
  instructmining score --dataset big.jsonl --rule instructmining-smollm2-135m --checkpoint_dir big.ckpt \\
      --output scored.parquet

Offline (HF_HUB_OFFLINE=1, or no network), a Hub model that is not in the Hugging Face cache is loaded from its
offline copy when one installs from the package index (SmolLM2-135M-Instruct, all-MiniLM-L6-v2); the dataset
card records that it was."""


@dataclass
class ScoreArguments:
    """What to compute besides the rule's indicators, and where to write it (the rest is `ScoreConfig`).

    Args:
        output (`str`):
            Output file (`.parquet`, `.jsonl`, `.json`, `.csv`) or folder (`save_to_disk`).
        indicators (`str`, *optional*):
            Comma-separated indicator columns to compute: alone, instead of a rule (no `instruct_score` then); with
            `--rule`, as well as the rule's.
        num_proc (`int`, *optional*):
            `Dataset.map` worker processes (one GPU each when several are visible).
        checkpoint_dir (`str`, *optional*):
            Keep finished rows in this folder, every `shard_size` rows: run the same command again after a stop and
            it resumes there. A folder holding another job's rows is started afresh, with a warning naming what
            changed (the rule, the indicators or their options, the input rows).
        shard_size (`int`, *optional*, defaults to `2048`):
            Rows per checkpoint shard: what a killed job recomputes at most.
        group_by (`str`, *optional*):
            A column of the data (e.g. the model that wrote each answer): the summary adds, per value, the row count,
            the mean score and the rows the rule clipped per indicator.
    """

    output: str = field(metadata={"help": "Output file (.parquet, .jsonl, .json, .csv) or folder."})
    indicators: str | None = field(
        default=None,
        metadata={"help": "Comma-separated indicator columns to compute: alone, instead of a rule; with --rule, too."},
    )
    num_proc: int | None = field(default=None, metadata={"help": "Dataset.map worker processes."})
    checkpoint_dir: str | None = field(
        default=None,
        metadata={"help": "Keep finished rows in this folder; the same command run again resumes there."},
    )
    shard_size: int = field(
        default=DEFAULT_SHARD_SIZE, metadata={"help": "Rows per checkpoint shard (what a stop loses at most)."}
    )
    group_by: str | None = field(
        default=None,
        metadata={"help": "A column of the data: the summary adds its mean score and clip counts per value."},
    )

    def __post_init__(self):
        check_output(self.output)
        if self.shard_size < 1:
            raise ValueError(f"`--shard_size` must be at least 1 row, got {self.shard_size}.")
        if self.checkpoint_dir is not None and os.path.isfile(self.checkpoint_dir):
            raise ValueError(f"`--checkpoint_dir {self.checkpoint_dir}` is a file: name a folder for the checkpoint.")
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


def make_parser():
    parser = make_command_parser(
        "score",
        (InputArguments, ScoreArguments, ScoreConfig),
        "Add indicator columns and instruct_score to every row.",
        EXAMPLES,
    )
    # `--indicators` alone computes no rule: on the command line the paper's rule is the default only without them.
    parser.set_defaults(rule=None)
    rule = next(a for a in parser._actions if a.dest == "rule")
    rule.help += f" Default: {DEFAULT_RULE}, unless --indicators is given alone."
    return parser


def main(inputs: InputArguments, args: ScoreArguments, config: ScoreConfig) -> dict[str, object]:
    from ..scoring import resolve_rule, summarize_dataset

    names = args.names or None
    rule = resolve_rule(config.rule or DEFAULT_RULE) if config.rule or not names else None
    checkpoint = {"checkpoint_dir": args.checkpoint_dir, "shard_size": args.shard_size} if args.checkpoint_dir else {}
    data = load_input(inputs, column_mapping=config.column_mapping)
    check_group_by(data, args.group_by)
    scored = compute_with(data, names, rule, config, num_proc=args.num_proc, **checkpoint)
    columns = list(dict.fromkeys([*(rule.columns if rule else []), *(names or [])]))
    summary = summarize_dataset(scored, rule, columns=columns, group_by=args.group_by)
    if args.group_by is not None:
        print_groups(summary, args.group_by)
    rows = {"rule": rule.name or rule.formula() if rule else "- (indicators only)"}
    rows.update({"rows scored": summary.num_rows, "invalid rows": summary.num_invalid})
    rows.update(summary_rows(summary))
    rows["output"] = save_output(scored, args.output)
    return rows
