"""InstructMining in miniature on real data: does rule-selected data beat random data of the same size?

The paper's recipe (arXiv 2307.06290, Sections 3-5) with this project's own pipeline, on public data nobody here
wrote (`../shared/data`):

1. **Pool**: a seeded sample of AlpacaEval instructions with the responses of all ten models in
   `alpaca_eval_outputs/` (from GPT-4 down to the base model phi-2): sources of different quality, as the paper mixed
   Alpaca, Open-Assistant, StackExchange and wikiHow.
2. **Evaluation set**: Self-Instruct's user-oriented instructions (held out, never trained on).
3. **Indicators**: every indicator that runs offline (`compute_indicators`).
4. **Labelling**: random Dirichlet mixtures of the ten sources (`sample_subsets`), a LoRA finetune of
   SmolLM2-135M-Instruct on each (`run_labeling`, TRL `SFTTrainer`), eval loss recorded in a `LabelStore`.
5. **Rule**: `fit_rule` (best subset of indicators by BIC), with R², adjusted R², cross-validated R² and VIF.
6. **Selected vs random**: at several sizes, the top-k rows by the fitted rule against k random rows, three seeds
   each (a seed sets the training seed and the random draw).
7. **Search**: `search_subset_size` (BlendSearch) over how many top-ranked rows to keep.

Everything lands in `experiments/replication/`: `RESULTS.md` (tables, plots, commands), `rule-<profile>.json` (the
fitted rule with its provenance) and `labels-<profile>.jsonl` (every finetuning run). Interrupted runs resume:
finished runs are read back from `labels-<profile>.jsonl` and never retrained, and the scored pool is cached under the
profile's `work_dir`.

    python experiments/replication/replicate.py                      # the CPU profile, one working session
    python experiments/replication/replicate.py --profile gpu        # on a GPU
    python experiments/replication/replicate.py --update-demo-rule   # also replace the demo rule if better supported
"""

import argparse
import hashlib
import json
import logging
import random
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
DEMO_RULE = ROOT / "hf_instructmining" / "builtin_rules" / "instructmining-smollm2-135m-demo.json"
RULE_NAME = "instructmining-smollm2-135m-alpacaeval"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

logger = logging.getLogger("replication")


def load_settings(path: Path, profile: str) -> dict:
    import yaml

    settings = yaml.safe_load(path.read_text())
    if profile not in settings:
        raise SystemExit(f"No profile `{profile}` in {path}; profiles: {sorted(settings)}.")
    return settings[profile]


def build_pool(settings: dict):
    """All ten models' responses to a seeded sample of AlpacaEval instructions, one row per (instruction, model)."""
    import datasets

    files = sorted((DATA / "alpaca_eval_outputs").glob("*.json"))
    if not files:
        raise SystemExit(f"No AlpacaEval outputs under {DATA}: this experiment needs the shared data folder.")
    by_model = {f.stem: json.loads(f.read_text()) for f in files}
    # phi-2 answered 803 of the 805 instructions: sample among those every model answered.
    common = set.intersection(*({r["instruction"] for r in rows} for rows in by_model.values()))
    instructions = sorted(common)
    random.Random(settings["seed"]).shuffle(instructions)
    chosen = set(instructions[: settings["pool_instructions"]])
    rows = [
        {"instruction": r["instruction"], "input": "", "output": r["output"], "generator": model}
        for model, records in by_model.items()
        for r in records
        if r["instruction"] in chosen and r["output"].strip()
    ]
    return datasets.Dataset.from_list(rows)


def build_eval_set(settings: dict):
    import datasets

    path = DATA / "self_instruct" / "user_oriented_instructions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    random.Random(settings["seed"]).shuffle(records)
    rows = [
        {"instruction": r["instruction"], "input": r["instances"][0]["input"], "output": r["instances"][0]["output"]}
        for r in records[: settings["eval_rows"]]
    ]
    return datasets.Dataset.from_list(rows)


def score_pool(pool, settings: dict, work_dir: Path):
    """The pool with every indicator column, cached on disk: scoring is the slow first step of a resumed run."""
    import datasets

    from hf_instructmining import compute_indicators
    from hf_instructmining.offline import offline_models

    key = hashlib.sha256(json.dumps([pool._fingerprint, settings["indicators"]]).encode()).hexdigest()[:12]
    cache = work_dir / f"scored-pool-{key}"
    if cache.exists():
        logger.info("Scored pool read back from %s.", cache)
        return datasets.load_from_disk(str(cache))
    scored = compute_indicators(pool, settings["indicators"], models=offline_models())
    scored.save_to_disk(str(cache))
    return datasets.load_from_disk(str(cache))


def labeling_config(settings: dict, seed: int | None = None):
    from hf_instructmining import LabelingConfig
    from hf_instructmining.offline import smollm2_path

    training = dict(settings["training"])
    model = training.pop("model")
    return LabelingConfig(
        model_name_or_path=smollm2_path() if model == "smollm2-offline" else model,
        finetuning=training.pop("finetuning"),
        seed=settings["seed"] if seed is None else seed,
        sft_overrides={"logging_steps": 1000, "disable_tqdm": True},
        **training,
    )


def check_store(store, config) -> None:
    """Refuse a label store written under other training settings: runs are matched by subset id alone."""
    current = {k: v for k, v in config.to_dict().items() if k != "seed"}
    for record in store.records("subset_done"):
        recorded = {k: v for k, v in record.get("labeling_config", {}).items() if k != "seed"}
        changed = sorted(k for k in current if k in recorded and recorded[k] != current[k])
        if changed:
            raise SystemExit(
                f"{store.path} holds runs made with other settings ({', '.join(changed)} differ): move it away to "
                "start over with these settings, or restore the settings to resume it."
            )


def compare(scored, eval_set, settings: dict, store) -> list[dict]:
    """Top-k by the rule against k random rows, at each size and seed; one finetuning run each, resumable."""
    import numpy as np

    from hf_instructmining import run_labeling, select_top_k

    runs = []
    for seed in settings["compare_seeds"]:
        subsets = {}
        for k in settings["compare_sizes"]:
            subsets[f"compare-rule-k{k}-s{seed}"] = select_top_k(scored, k)
            draw = np.random.default_rng([settings["seed"], seed, k]).choice(len(scored), size=k, replace=False)
            subsets[f"compare-random-k{k}-s{seed}"] = scored.select(sorted(draw.tolist()))
        done = run_labeling(
            subsets, eval_set, labeling_config(settings, seed), store, indicators=settings["indicators"]
        )
        for record in done:
            _, selection, k, s = record["subset_id"].split("-")
            runs.append({"selection": selection, "k": int(k[1:]), "seed": int(s[1:]), "record": record})
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--profile", default="cpu", help="A profile of the config file: `cpu` or `gpu`.")
    parser.add_argument(
        "--update-demo-rule",
        action="store_true",
        help="Write the fitted rule over the offline demo's rule when it is better supported (more subsets and a "
        "higher cross-validated R²).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    settings = load_settings(args.config, args.profile)
    work_dir = ROOT / settings["work_dir"]
    work_dir.mkdir(parents=True, exist_ok=True)

    from hf_instructmining import LabelStore, QualityRule, fit_rule, run_labeling, sample_subsets, search_subset_size
    from hf_instructmining.labeling import split_by_column
    from hf_instructmining.offline import OFFLINE_INDICATOR_SPECS

    timings = {}
    start = time.perf_counter()
    pool = build_pool(settings)
    eval_set = build_eval_set(settings)
    scored = score_pool(pool, settings, work_dir)
    timings["score"] = time.perf_counter() - start

    store = LabelStore(HERE / f"labels-{args.profile}.jsonl")
    t = time.perf_counter()
    sources = split_by_column(scored, "generator")
    subsets = sample_subsets(
        sources, n_subsets=settings["n_subsets"], subset_size=settings["subset_size"], seed=settings["seed"]
    )
    config = labeling_config(settings)
    check_store(store, config)
    labels = run_labeling(subsets, eval_set, config, store, scored_pool=sources, indicators=settings["indicators"])
    timings["label"] = time.perf_counter() - t

    base_model = SMOLLM2_ID if settings["training"]["model"] == "smollm2-offline" else settings["training"]["model"]
    provenance = {
        "source": f"fitted by this project with `python experiments/replication/replicate.py --profile {args.profile}`",
        "base_model": base_model,
        "eval_set": f"{len(eval_set)} Self-Instruct user-oriented instructions (seeded sample, held out)",
        "fitting_data": (
            f"{settings['n_subsets']} random mixtures of {settings['subset_size']} rows of the ten AlpacaEval models' "
            f"responses to {settings['pool_instructions']} instructions"
        ),
        "labeling": {k: v for k, v in settings["training"].items() if k != "model"},
    }
    fit = fit_rule(
        labels,
        indicators=settings["indicators"],
        selection="bic",
        name=RULE_NAME,
        indicator_specs={name: OFFLINE_INDICATOR_SPECS[name] for name in settings["indicators"]},
        provenance=provenance,
    )
    full_fit = fit_rule(labels, indicators=settings["indicators"], selection="all")
    rule_path = fit.rule.save(HERE / f"rule-{args.profile}.json")
    logger.info("Fitted rule saved to %s.\n%s", rule_path, fit.report())

    scored = scored.add_column("instruct_score", fit.rule.predict(scored).tolist())
    t = time.perf_counter()
    runs = compare(scored, eval_set, settings, store)
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    search = search_subset_size(
        scored,
        low=settings["search_low"],
        high=settings["search_high"],
        num_samples=settings["search_trials"],
        store=store,
        eval_dataset=eval_set,
        labeling_config=config,
    )
    timings["search"] = time.perf_counter() - t

    demo = QualityRule.load(DEMO_RULE)
    promoted = False
    if args.update_demo_rule and better_supported(fit.rule, demo):
        promoted = promote(fit.rule, args.profile)
    from report import write_report

    write_report(
        HERE,
        profile=args.profile,
        settings=settings,
        scored=scored,
        eval_set=eval_set,
        labels=labels,
        fit=fit,
        full_fit=full_fit,
        runs=runs,
        search=search,
        demo=demo,
        promoted=promoted,
        timings=timings,
    )
    logger.info("Done in %.1f min: %s", (time.perf_counter() - start) / 60, HERE / "RESULTS.md")


def better_supported(rule, demo) -> bool:
    """More labelled subsets and a higher cross-validated R² than the demo rule's fit."""
    new, old = rule.provenance["fit"], demo.provenance.get("fit", {})
    return new["n_subsets"] > old.get("n_subsets", 0) and (new["cv_r_squared"] or -1) > (old.get("cv_r_squared") or -1)


def promote(rule, profile: str) -> bool:
    """Write `rule` as the offline demo's rule, keeping the demo's name and saying where it comes from."""
    from hf_instructmining import QualityRule

    data = rule.to_dict()
    data["name"] = QualityRule.load(DEMO_RULE).name
    data["provenance"]["note"] = (
        f"Fitted on real data (AlpacaEval responses of ten models) by experiments/replication ({profile} profile); "
        "a small-scale rule for the offline demo. Fit your own for real use (see the README)."
    )
    DEMO_RULE.write_text(json.dumps(data, indent=2) + "\n")
    logger.info("The demo rule %s now holds this fit.", DEMO_RULE)
    return True


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
