"""Does InstructMining pick better data? The paper's recipe on real data, with labels that carry signal.

The recipe (arXiv 2307.06290, Sections 3-5) with this project's own pipeline, on public data nobody here wrote
(`../shared/data`), in stages that each resume from what is committed next to this script:

1. **Data**: AlpacaEval instructions that all ten models of `alpaca_eval_outputs/` answered, shuffled with the
   seed. The first `eval_instructions` are held out: GPT-4's answers to them are the evaluation set (references
   of high quality, never trained on). The next `pool_instructions`, answered by all ten models (GPT-4 down to the
   base model phi-2), are the candidate pool, one source per model.
2. **score**: every candidate indicator on the pool (`compute_indicators`, the offline models); values are kept in
   `scores-<profile>/<model>.jsonl`.
3. **noise**: the first labelled subset of each shape trained with several seeds: the noise floor of a label.
4. **label**: Dirichlet mixtures of the ten sources (`sample_subsets`), and mixtures of the shape users score, one
   answer per instruction (`one_answer`: `sample_subsets(one_per="instruction")`), one full finetune of
   SmolLM2-135M-Instruct each (`run_labeling`, TRL `SFTTrainer`), eval loss recorded in `labels-<profile>.jsonl`.
5. **fit**: `fit_rule` over the candidates (best subset by BIC), with R², cross-validated R² and VIF.
6. **compare**: the rule's top k rows against k random ones, the k longest answers and the top k by IFD (as
   Superfiltering and Cherry LLM select), at several sizes and seeds, paired by seed; on the pool and on a held-out
   pool of one answer per instruction (`held_out_pool`).
7. **transfer**: labelled mixtures of answers to instructions the rule never saw, one set per group of AlpacaEval
   instruction sources (`transfer` in the config), against which the fitted rule's predicted eval losses are
   checked out of sample.
8. **check**: the rule's mean score over each model's answers to all AlpacaEval instructions, against the models'
   public win rates (`alpaca_eval_win_rates.csv`), which nothing here fits on; then every variant of the rule
   (out-of-range policy x indicator scales x KNN, `variants.py`) on that check, GPT-4 over phi-2 per held-out
   instruction and the example data's styles, each figure beside its goal; and the paired runs of `compare` that
   the label store holds, each table beside its goal; and the rule's prediction of the labels of `transfer`.
9. **report**: `RESULTS.md` and plots.

    python experiments/replication/replicate.py                       # the cpu profile, every stage
    python experiments/replication/replicate.py --stages score        # one stage (e.g. alongside `label`)
    python experiments/replication/replicate.py --stages check        # every check beside its goal, from stored values
    python experiments/replication/replicate.py --profile gpu         # on a GPU
"""

import argparse
import json
import logging
import random
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
RULE_NAME = "instructmining-smollm2-135m"
STAGES = ("score", "noise", "label", "fit", "compare", "transfer", "check", "report")

logger = logging.getLogger("replication")


def load_settings(path: Path, profile: str) -> dict:
    import yaml

    settings = yaml.safe_load(path.read_text())
    if profile not in settings:
        raise SystemExit(f"No profile `{profile}` in {path}; profiles: {sorted(settings)}.")
    return settings[profile]


class Data:
    """The answers of the ten models, split into the evaluation set and the candidate pool by instruction."""

    def __init__(self, settings: dict):
        files = sorted((DATA / "alpaca_eval_outputs").glob("*.json"))
        if not files:
            raise SystemExit(f"No AlpacaEval outputs under {DATA}: this experiment needs the shared data folder.")
        self.answers = {f.stem: json.loads(f.read_text()) for f in files}
        # phi-2 answered 803 of the 805 instructions: split among those every model answered.
        self.answered_by_all = set.intersection(*({r["instruction"] for r in rows} for rows in self.answers.values()))
        order = sorted(self.answered_by_all)
        random.Random(settings["seed"]).shuffle(order)
        n_eval, n_pool = settings["eval_instructions"], settings["pool_instructions"]
        self.eval_instructions = set(order[:n_eval])
        self.pool_instructions = set(order[n_eval : n_eval + n_pool])
        self.seed, self.after_pool = settings["seed"], order[n_eval + n_pool :]
        # AlpacaEval's instruction source of each instruction (its `dataset` field: selfinstruct, koala, ...).
        self.source = {r["instruction"]: r["dataset"] for rows in self.answers.values() for r in rows}

    def rows(self, model: str, instructions: set | None = None) -> list[dict]:
        """`model`'s non-empty answers (to `instructions`, or to all), with their position in its file as `index`."""
        return [
            {"instruction": r["instruction"], "input": "", "output": r["output"], "generator": model, "index": i}
            for i, r in enumerate(self.answers[model])
            if r["output"].strip() and (instructions is None or r["instruction"] in instructions)
        ]

    def pool(self):
        import datasets

        return datasets.Dataset.from_list(
            [r for m in sorted(self.answers) for r in self.rows(m, self.pool_instructions)]
        )

    def one_answer_pool(self, n_instructions: int):
        """A pool of the other shape users have: one answer per instruction, each from a model drawn (seeded) for
        that instruction, to the `n_instructions` instructions that follow the pool in the shuffle (outside the pool
        and the evaluation set)."""
        import datasets

        wanted = self.after_pool[:n_instructions]
        answers: dict[str, list[dict]] = {}
        for model in sorted(self.answers):
            for row in self.rows(model, set(wanted)):
                answers.setdefault(row["instruction"], []).append(row)
        draw = random.Random(self.seed)
        return datasets.Dataset.from_list([draw.choice(answers[i]) for i in wanted if i in answers])

    def answers_to(self, instructions: list[str]):
        """Every model's answers to `instructions`, as one dataset (the `pool` layout)."""
        import datasets

        return datasets.Dataset.from_list([r for m in sorted(self.answers) for r in self.rows(m, set(instructions))])

    def eval_set(self):
        import datasets

        return datasets.Dataset.from_list(self.rows("gpt4", self.eval_instructions))


class ScoreStore:
    """Indicator values per model and answer index, one JSON line per scored chunk: committed, so scoring resumes."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def read(self, model: str) -> dict[int, dict]:
        values: dict[int, dict] = {}
        path = self.folder / f"{model}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    values.setdefault(row.pop("index"), {}).update(row)
        return values

    def add(self, model: str, rows: list[dict]) -> None:
        with open(self.folder / f"{model}.jsonl", "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, allow_nan=False) + "\n")

    def attach(self, dataset, columns: list[str]):
        """`dataset` (with `generator` and `index` columns) with the stored values of `columns` added."""
        stored = {m: self.read(m) for m in set(dataset["generator"])}
        keys = list(zip(dataset["generator"], dataset["index"], strict=True))
        for column in columns:
            dataset = dataset.add_column(column, [stored[m][i][column] for m, i in keys])
        return dataset


def score(dataset, columns: list[str], scores: ScoreStore, chunk: int = 100) -> None:
    """Compute the `columns` that `scores` lacks for `dataset`'s rows, `chunk` rows at a time (resumable).

    KNN columns are computed in one go over the whole `dataset` (each row excluding itself): embedding is cheap, and
    the neighbours depend on the whole set.
    """
    from hf_instructmining import compute_indicators

    knn = [c for c in columns if c.startswith("knn_")]
    per_row = [c for c in columns if c not in knn]
    for model in sorted(set(dataset["generator"])):
        stored = scores.read(model)
        rows = dataset.filter(lambda r, m=model: r["generator"] == m)
        todo = [i for i, index in enumerate(rows["index"]) if any(c not in stored.get(index, {}) for c in per_row)]
        for start in range(0, len(todo), chunk):
            part = rows.select(todo[start : start + chunk])
            t = time.perf_counter()
            scored = compute_indicators(part, per_row, models=models_for(per_row))
            scores.add(model, [{"index": r["index"], **{c: r[c] for c in per_row}} for r in scored])
            logger.info("Scored %d rows of %s in %.0f s.", len(part), model, time.perf_counter() - t)
    if not knn:
        return
    stored = {m: scores.read(m) for m in set(dataset["generator"])}
    keys = zip(dataset["generator"], dataset["index"], strict=True)
    missing = [n for n, (m, i) in enumerate(keys) if any(c not in stored[m].get(i, {}) for c in knn)]
    if missing:
        # The neighbours come from the whole dataset, so all of it is embedded; only the rows that lack a value are
        # stored (a stored value is never replaced).
        scored = compute_indicators(dataset, knn, models=models_for(knn)).select(missing)
        for model in sorted(set(scored["generator"])):
            part = scored.filter(lambda r, m=model: r["generator"] == m)
            scores.add(model, [{"index": r["index"], **{c: r[c] for c in knn}} for r in part])


def models_for(columns: list[str]) -> dict[str, str]:
    """The offline model folders of the indicators that write `columns` (by column or family)."""
    from hf_instructmining.indicators.registry import indicator_family
    from hf_instructmining.offline import offline_models

    needed = set(columns) | {indicator_family(c) for c in columns}
    return {key: path for key, path in offline_models().items() if key in needed}


def labeling_config(settings: dict, seed: int | None = None):
    from hf_instructmining import LabelingConfig
    from hf_instructmining.offline import smollm2_path

    training = dict(settings["training"])
    model = training.pop("model")
    return LabelingConfig(
        model_name_or_path=smollm2_path() if model == "smollm2-offline" else model,
        seed=settings["seed"] if seed is None else seed,
        sft_overrides={"logging_steps": 1000, "disable_tqdm": True},
        **training,
    )


def labelled_subsets(pool, settings: dict) -> dict[str, list]:
    """The subsets the label stage trains on, by shape: Dirichlet mixtures of the pool's ten sources
    (`sample_subsets`), and with `one_answer` in the settings, mixtures of one answer per instruction."""
    from hf_instructmining import sample_subsets
    from hf_instructmining.labeling import split_by_column

    sources = split_by_column(pool, "generator")
    shapes = {
        "mixtures": sample_subsets(
            sources,
            n_subsets=settings["n_subsets"],
            subset_size=settings["subset_size"],
            seed=settings["seed"],
            concentration=settings["concentration"],
        )
    }
    spec = settings.get("one_answer")
    if spec:
        drawn = sample_subsets(
            sources,
            n_subsets=spec["n_subsets"],
            subset_size=settings["subset_size"],
            seed=settings["seed"],
            concentration=spec["concentration"],
            one_per="instruction",
        )
        shapes["one_answer"] = [renamed(s, f"oneanswer-{s.subset_id}") for s in drawn]
    return shapes


def check_store(store, config) -> None:
    """Refuse a label store written under other training settings: runs are matched by subset id alone."""
    current = {k: v for k, v in config.to_dict().items() if k not in ("seed", "model_name_or_path")}
    for record in store.records("subset_done"):
        recorded = {k: v for k, v in record.get("labeling_config", {}).items() if k != "seed"}
        changed = sorted(k for k in current if k in recorded and recorded[k] != current[k])
        if changed:
            raise SystemExit(
                f"{store.path} holds runs made with other settings ({', '.join(changed)} differ): move it away to "
                "start over with these settings, or restore the settings to resume it."
            )


def label(subsets, eval_set, settings: dict, store, seed: int | None = None) -> list[dict]:
    from hf_instructmining import run_labeling

    config = labeling_config(settings, seed)
    check_store(store, config)
    # Labels carry eval losses only: indicator means are joined at fit time from the committed scores, so that
    # labelling and scoring run independently and a new indicator needs no relabelling.
    return run_labeling(subsets, eval_set, config, store, indicators=[])


def subset_means(subsets, scored_pool, columns: list[str]) -> dict[str, dict[str, float]]:
    """Subset id -> the mean of each indicator over its rows (found by `source` and `row_index`)."""
    import numpy as np

    by_source = {
        m: scored_pool.filter(lambda r, m=m: r["generator"] == m) for m in sorted(set(scored_pool["generator"]))
    }
    means = {}
    for subset in subsets:
        values = {c: [] for c in columns}
        for source, index in zip(subset.dataset["source"], subset.dataset["row_index"], strict=True):
            row = by_source[source][index]
            for c in columns:
                values[c].append(row[c])
        means[subset.subset_id] = {c: float(np.nanmean(v)) for c, v in values.items()}
    return means


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--profile", default="cpu", help="A profile of the config file: `cpu` or `gpu`.")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="Stages to run, in order.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("hf_instructmining").setLevel(logging.WARNING)
    settings = load_settings(args.config, args.profile)
    (ROOT / settings["work_dir"]).mkdir(parents=True, exist_ok=True)

    from hf_instructmining import LabelStore

    data = Data(settings)
    pool, eval_set = data.pool(), data.eval_set()
    scores = ScoreStore(HERE / f"scores-{args.profile}")
    store = LabelStore(HERE / f"labels-{args.profile}.jsonl")
    shapes = labelled_subsets(pool, settings)
    subsets = [s for members in shapes.values() for s in members]
    # The noise floor of each shape: its first subset trained again with other seeds.
    noise = {
        shape: {
            seed: first if seed == settings["seed"] else renamed(first, f"{first.subset_id}-seed{seed}")
            for seed in settings["noise_seeds"]
        }
        for shape, (first, *_) in shapes.items()
    }
    state = {"data": data, "pool": pool, "eval_set": eval_set, "scores": scores, "store": store, "subsets": subsets,
             "shapes": {shape: {s.subset_id for s in members} for shape, members in shapes.items()}}  # fmt: skip
    candidates = settings["candidates"]
    if "score" in args.stages:
        score(pool, candidates, scores)
    if "noise" in args.stages:
        for seeds in noise.values():
            for seed, subset in seeds.items():
                label([subset], eval_set, settings, store, seed)
    if "label" in args.stages:
        label(subsets, eval_set, settings, store)
    if {"fit", "compare", "transfer", "check", "report"} & set(args.stages):
        from report import write_report
        from stages import check_models, compare, fit

        state["noise"] = noise
        state["fit"] = fit(state, settings, args.profile)
        # Without the compare stage, the runs the store holds (nothing trains).
        state["compare"] = compare(state, settings, train="compare" in args.stages)
        if settings.get("transfer"):
            from stages import transfer

            state["transfer"] = transfer(state, settings, train="transfer" in args.stages)
        if "check" in args.stages:
            from stages import print_comparison, print_transfer
            from variants import check_variants, print_variants, record_checks

            state["check"] = check_models(state, settings)
            state["variants"] = check_variants(state, settings, args.profile)
            print_variants(state["variants"])
            print_comparison(state["compare"])
            print_transfer(state.get("transfer"), state["fit"])
            record_checks(state["variants"], ROOT / settings["rule_file"])
        if "report" in args.stages:
            write_report(state, settings, args.profile)


def renamed(subset, subset_id: str):
    """`subset` under another id: the same rows trained as another run (another seed, another experiment)."""
    import dataclasses

    return dataclasses.replace(subset, subset_id=subset_id)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
