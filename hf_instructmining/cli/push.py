"""`instructmining push`: publish a scored dataset, its selection, rule and card (or write the same folder locally).

The token comes from the usual `huggingface_hub` sources (`HF_TOKEN`, `hf auth login`); it is never a flag, so it
never lands in shell history, cards or logs.
"""

import json
import logging
import os
from dataclasses import dataclass, field

from ..hub import PushConfig
from ..scoring.config import ScoreConfig
from ._io import InputArguments, compute_with, load_input, make_command_parser, require_score_column
from .select_ import SelectArguments, select_rows


logger = logging.getLogger(__name__)

EXAMPLES = """\
  instructmining push --dataset scored.parquet --rule instructmining-llama2-7b --top_k 1000 \\
      --repo_id me/alpaca-instructmining --private
  instructmining push --dataset scored.parquet --rule my_rule.json --fraction 0.1 --folder ./alpaca-selected
  instructmining push --dataset scored.parquet --rule my_rule.json --search search/instructmining_search.json \\
      --top_k 2532 --repo_id me/openorca-top --create_pr
  # scores made by another rule: score again with this one before publishing
  instructmining push --dataset scored.parquet --rule instructmining-smollm2-135m --rescore --folder ./out

The card names the rule that made `instruct_score`: by default the one recorded in the data by
`instructmining score` (parquet files and folders keep it). A `--rule` that does not reproduce the scores from
the indicator columns is refused, unless `--rescore` scores the data again with it."""


@dataclass
class PushArguments:
    """Where to publish and what goes with the data.

    Args:
        repo_id (`str`, *optional*):
            Hub dataset repo to push to (created when missing). Give this or `folder`.
        folder (`str`, *optional*):
            Write the Hub layout to this local folder instead of pushing.
        rescore (`bool`, *optional*, defaults to `False`):
            Score the data again with `--rule` (its indicators and `instruct_score`) before publishing, with the
            other `ScoreConfig` flags (`--models`, `--device`, `--format`, ...).
        top_k (`int`, *optional*):
            Publish a `selected` config with the k best rows.
        fraction (`float`, *optional*):
            Publish a `selected` config with this fraction of the best rows.
        threshold (`float`, *optional*):
            Publish a `selected` config with rows scoring at most this.
        search (`str`, *optional*):
            A search trace (`instructmining_search.json` from `instructmining search`) to plot in the card.
        private (`bool`, *optional*):
            Make a new repo private; an existing repo keeps its visibility unless this is given.
        revision (`str`, *optional*):
            Branch to push to.
        create_pr (`bool`, *optional*, defaults to `False`):
            Open a pull request instead of committing to the branch.
    """

    repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo to push to."})
    folder: str | None = field(default=None, metadata={"help": "Write the Hub layout locally instead of pushing."})
    rescore: bool = field(default=False, metadata={"help": "Score the data again with --rule before publishing."})
    top_k: int | None = field(default=None, metadata={"help": "Publish a `selected` config with the k best rows."})
    fraction: float | None = field(default=None, metadata={"help": "Publish a `selected` config with this fraction."})
    threshold: float | None = field(default=None, metadata={"help": "Publish a `selected` config: score <= this."})
    search: str | None = field(default=None, metadata={"help": "instructmining_search.json to plot in the card."})
    private: bool | None = field(default=None, metadata={"help": "Make a new repo private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})

    def __post_init__(self):
        if (self.repo_id is None) == (self.folder is None):
            raise ValueError("Give exactly one of `--repo_id` (push to the Hub) or `--folder` (write locally).")
        if self.folder is not None and os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ValueError(f"`--folder {self.folder}` is a file, not a folder: name a folder to write into.")
        given = [n for n in ("top_k", "fraction", "threshold") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"Give at most one of `--top_k`, `--fraction`, `--threshold` (got {given}).")
        if self.repo_id is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.repo_id)
            except HFValidationError as err:
                raise ValueError(f"`--repo_id {self.repo_id}` is not a Hub repo id (`owner/name`): {err}") from None


def make_parser():
    parser = make_command_parser(
        "push",
        (InputArguments, PushArguments, PushConfig, ScoreConfig),
        "Publish a scored dataset with its selection, rule and card (or write the same folder locally).",
        EXAMPLES,
    )
    # The rule that made the scores is the one recorded in the data unless `--rule` names it.
    parser.set_defaults(rule=None)
    rule = next(a for a in parser._actions if a.dest == "rule")
    rule.help = "The rule that made instruct_score (name, file, repo); recorded in the card. Default: recorded."
    return parser


def main(inputs: InputArguments, args: PushArguments, config: PushConfig, scoring: ScoreConfig) -> dict[str, object]:
    from ..errors import ScoreProvenanceError
    from ..hub import push_to_hub, save_scored
    from ..scoring import resolve_rule
    from ..scoring.provenance import read

    if args.rescore and not scoring.rule:
        raise ValueError("`--rescore` scores the data again with `--rule`: give `--rule` too.")
    rule = resolve_rule(scoring.rule) if scoring.rule else None
    choice = None
    if any(getattr(args, n) is not None for n in ("top_k", "fraction", "threshold")):
        choice = SelectArguments(
            output="",
            top_k=args.top_k,
            fraction=args.fraction,
            threshold=args.threshold,
            score_column=config.score_column,
        )
    search = _read_search(args.search) if args.search else None
    scored = load_input(inputs, column_mapping=scoring.column_mapping)
    if args.rescore:
        scored = compute_with(scored, None, rule, scoring)
    require_score_column(scored, config.score_column, inputs.dataset)
    if rule is None and read(scored, config.score_column).rule is None:
        logger.warning(
            "`%s` records no rule for `%s` (JSON Lines, JSON and CSV copies drop the record), so its scores cannot be "
            "checked against one and the card will not name it: give the `--rule` that made them, or push the "
            ".parquet file or folder that `instructmining score` wrote.",
            inputs.dataset,
            config.score_column,
        )
    selection = select_rows(scored, choice) if choice else None
    rows = {"rows": len(scored), "rows selected": len(selection) if selection is not None else "-"}
    try:
        if args.folder:
            rows["folder"] = save_scored(scored, args.folder, rule, selection, search, config=config)
        else:
            commit = push_to_hub(
                scored,
                args.repo_id,
                rule,
                selection,
                search,
                config=config,
                private=args.private,
                revision=args.revision,
                create_pr=args.create_pr,
            )
            rows["repo"] = f"{args.repo_id} ({getattr(commit, 'commit_url', commit)})"
    except ScoreProvenanceError as err:
        keep = f", leave `--rule` out to publish with `{err.recorded}` (recorded in the data)" if err.recorded else ""
        raise ValueError(
            f"`{config.score_column}` in `{inputs.dataset}` was not made by the rule `{err.rule}`: {err.reason}. "
            f"Give the `--rule` that made the scores{keep}, or add `--rescore` to score the data again with "
            f"`--rule {scoring.rule or err.rule}`."
        ) from err
    return rows


def _read_search(path: str):
    from ..search import SearchResult

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise TypeError(f"it holds a JSON {type(data).__name__}, not an object")
        return SearchResult.from_dict(data)
    except FileNotFoundError:
        raise FileNotFoundError(f"No such search trace `{path}` (`--search`).") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"`{path}` (`--search`) is not a search trace written by `instructmining search`: {err}"
        ) from None
