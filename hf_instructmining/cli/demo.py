"""`instructmining demo`: the whole pipeline offline, on the project's example data, in a few minutes on a CPU.

1. Scores the project's example data (shipped in the package, see `hf_instructmining.offline.example_data_path`)
   with every indicator that runs offline: input/output length (SmolLM2 tokens), MTLD, compression ratio, KNN-6
   (MiniLM embeddings) and the perplexity family (SmolLM2-135M-Instruct), using the real models that install from
   the package index (see `hf_instructmining.offline`).
2. Applies `instructmining-smollm2-135m`, the rule this project fitted by full finetuning of SmolLM2-135M-Instruct
   on 84 labelled subsets of ten public models' answers (`experiments/replication/`), to predict each row's log eval
   loss: `instruct_score`.
3. Selects the best rows (exact duplicates dropped) and writes the Hub layout (scored and selected parquet,
   dataset card, rule JSON, pictures) to a local folder, exactly what `instructmining push` would upload.
"""

import os
from dataclasses import dataclass, field

from ._io import InputArguments, check_device, load_input, make_command_parser
from .select_ import SelectArguments, select_rows


DEMO_RULE = "instructmining-smollm2-135m"
EXAMPLES = """\
  instructmining demo
  instructmining demo --fraction 0.5 --output_dir /tmp/demo
  instructmining demo --dataset my_data.jsonl
  instructmining demo --max_rows 40   # a quick trial"""


@dataclass
class DemoArguments:
    """Options of the offline demo.

    Args:
        dataset (`str`, *optional*):
            The data to score (any supported file or folder); the project's example data (shipped in the
            package) by default.
        output_dir (`str`, *optional*, defaults to `"instructmining-demo"`):
            Where the scored dataset folder (card, parquet, rule, pictures) is written.
        fraction (`float`, *optional*, defaults to `0.3`):
            Fraction of rows to select, best first (0 < fraction <= 1).
        device (`str`, *optional*):
            Where the models run; a GPU when one is visible.
        max_rows (`int`, *optional*):
            Score only the first N rows (a quick trial).
    """

    dataset: str | None = field(default=None, metadata={"help": "The data to score; the packaged example data."})
    output_dir: str = field(default="instructmining-demo", metadata={"help": "Where the dataset folder is written."})
    fraction: float = field(default=0.3, metadata={"help": "Fraction of rows to select, best first."})
    device: str | None = field(default=None, metadata={"help": "Where the models run; a visible GPU by default."})
    max_rows: int | None = field(default=None, metadata={"help": "Score only the first N rows (a quick trial)."})

    def __post_init__(self):
        # Checked as `instructmining select` checks it, before the models are prepared.
        self.selection = SelectArguments(output="", fraction=self.fraction, dedupe=True)
        check_device(self.device)


def make_parser():
    return make_command_parser("demo", (DemoArguments,), "The offline end-to-end demo.", EXAMPLES)


def main(args: DemoArguments) -> dict[str, object]:
    from ..hub import PushConfig, save_scored
    from ..offline import OFFLINE_INDICATORS, example_data_path, offline_models
    from ..rules import QualityRule
    from ..scoring import compute_indicators
    from ..scoring.steps import rows_needed

    data_name = args.dataset or example_data_path()
    data = load_input(InputArguments(dataset=data_name, max_rows=args.max_rows))
    rule = QualityRule.from_builtin(DEMO_RULE)
    # The indicators the rule does not use still run on the same offline models, for the card's statistics.
    others = [name for name in OFFLINE_INDICATORS if name not in rule.columns]
    column, needed = rows_needed(others, rule)
    if len(data) < needed:  # checked before the models are prepared, not after them
        given = f"`--max_rows {args.max_rows}` leaves" if args.max_rows is not None else f"`{data_name}` has"
        raise ValueError(
            f"The demo's `{column}` needs at least {needed} rows (each row's {needed - 1} nearest neighbours are other "
            f"rows); {given} {len(data)} rows: give at least {needed}."
        )
    print("Preparing the offline models (SmolLM2-135M-Instruct is converted from GGUF once)...")
    models = offline_models()
    print(f"Scoring {len(data)} rows with {', '.join(OFFLINE_INDICATORS)} and the rule `{DEMO_RULE}`:")
    print(f"  {rule.formula()}")
    # The rule names the public ids of its models; `models` points every indicator at their offline copies.
    scored = compute_indicators(data, others, rule=rule, models=models, device=args.device)
    selected = select_rows(scored, args.selection)
    folder = save_scored(
        scored,
        args.output_dir,
        rule=rule,
        selection=selected,
        config=PushConfig(
            license="apache-2.0",
            pretty_name="hf-instructmining demo: example data, scored",
            notes=_notes(args.dataset, len(scored)),
        ),
    )
    _print_ranking(scored)
    return {
        "rows scored": len(scored),
        "rows selected": f"{len(selected)} (best {args.fraction:.0%}, exact duplicates dropped)",
        "dataset card": os.path.join(folder, "README.md"),
        "scored rows": os.path.join(folder, "scored"),
        "selected rows": os.path.join(folder, "selected"),
        "rule": os.path.join(folder, "instructmining_rule.json"),
        "pictures": os.path.join(folder, "images"),
    }


def _notes(dataset: str | None, rows: int) -> str:
    """The card's notes: what the demo scored, and what the card is for."""
    made = f"Made by `instructmining demo`, offline, with the rule `{DEMO_RULE}`"
    if dataset is not None:
        return f"{made}, from `{os.path.basename(dataset)}` ({rows} rows)."
    return (
        f"{made}: {rows} rows of hf-instructmining's example data, written for the project with answers of mixed "
        "quality on purpose (the `style` column is their hand label). It shows what a scored dataset and its card "
        "look like; it is not data to train on."
    )


def _print_ranking(scored) -> None:
    """What the score sees: its mean per hand-labelled style, and the best and worst rows."""
    from ..formats import extract_pairs

    scores = scored["instruct_score"]
    if "style" in scored.column_names:
        by_style: dict[str, list[float]] = {}
        for style, score in zip(scored["style"], scores, strict=True):
            by_style.setdefault(style, []).append(score)
        print("\nMean instruct_score by hand-labelled style (lower is better):")
        for style, values in sorted(by_style.items(), key=lambda item: sum(item[1]) / len(item[1])):
            print(f"  {style:<12} {sum(values) / len(values):8.4f}   ({len(values)} rows)")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    pairs = extract_pairs(scored[:], on_invalid="nan")
    for title, rows in (("Best", order[:3]), ("Worst", order[-3:])):
        print(f"\n{title} rows:")
        for i in rows:
            response = " ".join(pairs.responses[i].split())
            print(f"  {scores[i]:8.4f}  {pairs.instructions[i][:50]!r} -> {response[:60]!r}")
