"""The check stage's comparison of rule variants, from stored values (nothing here trains; it scores only what the
stores lack).

A variant is an out-of-range policy (`QualityRule.out_of_range`), a set of indicator scales (`QualityRule.transforms`)
and a way of measuring KNN (none; among the scored rows, as the paper does; or against a fixed reference set, the
pool's answers). Each variant is refitted on every stored fitting label (the subset means of the transformed values,
best subset by BIC, as the fit stage does) and checked on data it was not fitted on:

- **ten models**: Spearman of each model's mean score with its public win rate (goal: at most -0.7);
- **GPT-4 over phi-2**: on the held-out instructions, the fraction where the rule scores GPT-4's answer better than
  the base model phi-2's (goal: at least 90%);
- **demo**: the packaged example data's hand-labelled styles (goal: careful answers first, refusals, off-topic and
  repetitive answers among the last three);
- **by source**: the GPT-4-over-phi-2 fraction on each AlpacaEval source (`dataset` field) of the held-out
  instructions: whether the figure holds on every kind of instruction.

The example data's indicator values are scored once (`demo-scores-<profile>/`), and the reference-KNN values
(`knn_6_reference`: each row's distance to its 6th nearest pool answer, the row itself excluded) are stored beside
the others, so that the check reruns from stored values.
"""

import dataclasses
import json
import logging
import math

import numpy as np
from replicate import DATA, HERE, ROOT, ScoreStore, score


logger = logging.getLogger("replication")

POLICIES = ("clip", "clip_helpful", "clip_helpful_saturate", "none")
# Lengths and perplexities on a log scale (log1p for counts, which may be 0), and the end-of-turn log-probability as a
# probability (exp: bounded in [0, 1]), alone and together.
LOG_LENGTHS = {"input_length": "log1p", "output_length": "log1p"}
LOG_PERPLEXITIES = {"perplexity": "log", "unconditional_perplexity": "log"}
EOT_PROBABILITY = {"end_of_turn_logprob": "exp"}
TRANSFORM_SETS = {
    "none": {},
    "log lengths": LOG_LENGTHS,
    "log perplexities": LOG_PERPLEXITIES,
    "log lengths and perplexities": {**LOG_LENGTHS, **LOG_PERPLEXITIES},
    "exp eot": EOT_PROBABILITY,
    "log perplexities, exp eot": {**LOG_PERPLEXITIES, **EOT_PROBABILITY},
}
KNN_MODES = ("none", "within", "reference")
REFERENCE_COLUMN = "knn_6_reference"
GOALS = {"ten_models": -0.7, "gpt4_over_phi2": 0.9}
BOTTOM_STYLES = {"refusal", "off_topic", "repetitive"}


def check_variants(state: dict, settings: dict, profile: str) -> dict:
    """Every (policy x transform set x KNN mode) variant, refitted and checked; also the shipped rule as it is."""
    from hf_instructmining import QualityRule, fit_rule
    from hf_instructmining.offline import OFFLINE_INDICATOR_SPECS

    candidates = settings["candidates"]
    columns = [*candidates, REFERENCE_COLUMN]
    parts = {"held_out": (state["check"]["held_out"], state["scores"]), "demo": _demo_rows(profile, candidates)}
    _reference_knn(state, parts)
    frames = {"pool": state["scores"].attach(state["pool"], columns).to_pandas()}
    frames.update({name: store.attach(ds, columns).to_pandas() for name, (ds, store) in parts.items()})
    sources = {
        r["instruction"]: r["dataset"] for r in json.loads((DATA / "alpaca_eval_outputs" / "gpt4.json").read_text())
    }
    frames["held_out"]["source"] = frames["held_out"]["instruction"].map(sources)
    labels = _labels(state)
    win_rates = state["check"]["win_rates"]
    results = []
    shipped = QualityRule.load(ROOT / settings["rule_file"])
    results.append(
        {"variant": f"shipped rule (version {shipped.provenance.get('version', 1)}: {shipped.out_of_range}, "
         f"scales {shipped.transforms or 'none'})", "policy": shipped.out_of_range, "transforms": "as recorded",
         "knn": "within" if "knn_6" in shipped.columns else "none", "rule": shipped,
         **_checks(shipped, frames, win_rates, "within")}
    )  # fmt: skip
    for name, transforms in TRANSFORM_SETS.items():
        for knn in KNN_MODES:
            kept = [c for c in candidates if c != "knn_6" or knn != "none"]
            rows = _subset_rows(labels, frames["pool"], kept, transforms)
            fit = fit_rule(
                rows, indicators=kept, selection="bic", transforms=transforms,
                indicator_specs={c: OFFLINE_INDICATOR_SPECS[c] for c in kept},
            )  # fmt: skip
            for policy in POLICIES:
                rule = dataclasses.replace(fit.rule, out_of_range=policy)
                results.append(
                    {"variant": f"{policy} / {name} / knn {knn}", "policy": policy, "transforms": name, "knn": knn,
                     "rule": rule, "fit": fit, **_checks(rule, frames, win_rates, knn)}
                )  # fmt: skip
    for row in results:
        row["goals_met"] = _goals_met(row)
        logger.info(
            "%-60s ten models %+.2f  gpt4>phi-2 %3.0f%%  demo careful #%d, bottom three %s  CV R² %s  goals %d",
            row["variant"], row["ten_models"], 100 * row["gpt4_over_phi2"], row["careful_rank"],
            sorted(row["bottom_three"]), _fmt(row.get("fit") and row["fit"].cv_r_squared), row["goals_met"],
        )  # fmt: skip
    knn_transfer = {
        mode: {part: _describe(frames[part][column]) for part in ("pool", "held_out", "demo")}
        for mode, column in (("within", "knn_6"), ("reference", REFERENCE_COLUMN))
    }
    return {"variants": results, "knn_transfer": knn_transfer, "sources": sorted(set(frames["held_out"]["source"]))}


def _checks(rule, frames: dict, win_rates: dict, knn: str) -> dict:
    """The three checks (and the per-source breakdown) for one rule, with its KNN column measured as `knn` says."""
    import pandas as pd
    from scipy.stats import spearmanr

    def scores(frame):
        values = frame if knn != "reference" else frame.assign(knn_6=frame[REFERENCE_COLUMN])
        return rule.predict(values)

    answers = frames["pool"].assign(score=scores(frames["pool"]))
    held_out = frames["held_out"].assign(score=scores(frames["held_out"]))
    every = pd.concat([answers, held_out], ignore_index=True)
    models = sorted(win_rates)
    means = [every.loc[every["generator"] == m, "score"].mean() for m in models]
    rho = float(spearmanr(means, [win_rates[m] for m in models]).statistic)
    pairs = held_out.pivot_table(index="instruction", columns="generator", values="score")[["gpt4", "phi-2"]].dropna()
    better = pairs["gpt4"] < pairs["phi-2"]
    by_source = {}
    for source, part in held_out.drop_duplicates("instruction").groupby("source"):
        chosen = better[better.index.isin(part["instruction"])]
        by_source[source] = (float(chosen.mean()), len(chosen))
    demo = frames["demo"].assign(score=scores(frames["demo"]))
    styles = demo.groupby("style")["score"].mean().sort_values()
    order = list(styles.index)
    return {
        "ten_models": rho,
        "gpt4_over_phi2": float(better.mean()),
        "pairs": len(pairs),
        "by_source": by_source,
        "styles": {s: float(v) for s, v in styles.items()},
        "careful_rank": order.index("careful") + 1,
        "bottom_three": set(order[-3:]),
    }


def _goals_met(row: dict) -> int:
    return (
        int(row["ten_models"] <= GOALS["ten_models"])
        + int(row["gpt4_over_phi2"] >= GOALS["gpt4_over_phi2"])
        + int(row["careful_rank"] == 1)
        + int(row["bottom_three"] == BOTTOM_STYLES)
    )


def _labels(state: dict) -> list[tuple[str, float, list[tuple[str, int]]]]:
    """(subset id, eval loss, its rows as (source, row index)) for every labelled subset."""
    done = {r["subset_id"]: r for r in state["store"].records("subset_done")}
    return [
        (
            s.subset_id,
            done[s.subset_id]["eval_loss"],
            list(zip(s.dataset["source"], s.dataset["row_index"], strict=True)),
        )
        for s in state["subsets"]
        if s.subset_id in done
    ]


def _subset_rows(labels, pool, columns: list[str], transforms: dict) -> list[dict]:
    """Fit rows: each labelled subset's eval loss and the mean of each (transformed) indicator over its rows."""
    from hf_instructmining.rules.scales import transform

    scaled = {c: transform(pool[c].to_numpy(float), transforms.get(c), c) for c in columns}
    position = {}
    for source, group in pool.groupby("generator", sort=False):
        for row_index, at in enumerate(group.index):  # a row index counts the source's rows in pool order
            position[source, row_index] = at
    rows = []
    for subset_id, loss, members in labels:
        at = [position[m] for m in members]
        rows.append({"subset_id": subset_id, "eval_loss": loss, **{c: float(np.mean(scaled[c][at])) for c in columns}})
    return rows


def _demo_rows(profile: str, candidates: list[str]):
    """The packaged example data with its hand-labelled styles, and the store of its indicator values (scored
    once)."""
    import datasets

    from hf_instructmining.offline import example_data_path

    path = example_data_path()
    lines = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    demo = datasets.Dataset.from_list([{**r, "generator": "example-data", "index": i} for i, r in enumerate(lines)])
    store = ScoreStore(HERE / f"demo-scores-{profile}")
    # KNN among the example rows themselves, as `instructmining demo` measures it.
    score(demo, candidates, store, chunk=len(demo))
    return demo, store


def _reference_knn(state: dict, parts: dict) -> None:
    """Store `knn_6_reference` where it is missing: each row's distance to its 6th nearest pool answer (MiniLM
    embeddings of instruction and answer; a pool row excludes itself). `parts`: name -> (dataset, its store)."""
    from hf_instructmining.formats import extract_pairs
    from hf_instructmining.indicators import KNNDistance
    from hf_instructmining.offline import offline_models

    parts = {"pool": (state["pool"], state["scores"]), **parts}
    if all(REFERENCE_COLUMN in v for ds, store in parts.values() for v in _stored(store, ds)):
        return
    knn = KNNDistance(k=6, model=offline_models()["knn"])
    reference = knn.embed(extract_pairs(state["pool"][:]))
    for name, (dataset, store) in parts.items():
        if all(REFERENCE_COLUMN in v for v in _stored(store, dataset)):
            continue
        if name == "pool":
            values = knn.kth_distances(reference)  # the pool searches itself, each row excluded
        else:
            values = knn.kth_distances(knn.embed(extract_pairs(dataset[:])), reference)
        for model in sorted(set(dataset["generator"])):
            store.add(
                model,
                [
                    {"index": i, REFERENCE_COLUMN: float(v)}
                    for g, i, v in zip(dataset["generator"], dataset["index"], values, strict=True)
                    if g == model
                ],
            )


def _stored(store: ScoreStore, dataset) -> list[dict]:
    stored = {m: store.read(m) for m in set(dataset["generator"])}
    return [stored[m].get(i, {}) for m, i in zip(dataset["generator"], dataset["index"], strict=True)]


def _describe(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"median {np.median(values):.3f} (5%-95%: {np.quantile(values, 0.05):.3f}-{np.quantile(values, 0.95):.3f})"


def _fmt(value) -> str:
    return "n/a" if value is None or value is False else f"{value:.3f}"


def variants_table(result: dict) -> str:
    """The comparison as a Markdown table, each check beside its goal."""
    lines = [
        "| variant (policy / transforms / KNN) | indicators (BIC) | CV R² | max VIF | ten models (goal ≤ −0.7) | "
        "GPT-4 over phi-2 (goal ≥ 90%) | demo: careful rank (goal 1) | demo: last three (goal refusal, off-topic, "
        "repetitive) | goals met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["variants"]:
        rule = row["rule"]
        fit = row["fit"].to_dict() if row.get("fit") else rule.provenance.get("fit", {})
        vifs = [v["vif"] for v in fit.get("table", {}).values() if v["vif"] is not None]
        lines.append(
            f"| {row['variant']} | {', '.join(rule.columns)} | {_fmt(fit.get('cv_r_squared'))} | "
            f"{max(vifs) if vifs else math.nan:.1f} | "
        )
        lines[-1] += (
            f"{row['ten_models']:+.2f} | {100 * row['gpt4_over_phi2']:.0f}% of {row['pairs']} | "
            f"{row['careful_rank']} of {len(row['styles'])} | {', '.join(sorted(row['bottom_three']))} | "
            f"{row['goals_met']} of 4 |"
        )
    return "\n".join(lines)


def print_variants(result: dict) -> None:
    """The check command's output: the comparison table, and how KNN values move off the pool."""
    print("\nRule variants on every check (goals beside each figure):\n")  # noqa: T201
    print(variants_table(result))  # noqa: T201
    print("\nknn_6 on the pool, the held-out answers and the example data:")  # noqa: T201
    for mode, parts in result["knn_transfer"].items():
        print(f"  {mode:<10} " + "; ".join(f"{part} {text}" for part, text in parts.items()))  # noqa: T201


def record_checks(result: dict, path) -> None:
    """Write the shipped rule's check figures into its provenance (`checks`), beside its goals."""
    from hf_instructmining import QualityRule

    row = result["variants"][0]
    rule = QualityRule.load(path)
    rule.provenance["checks"] = {
        "command": "python experiments/replication/replicate.py --stages check",
        "ten_models_spearman": {"value": row["ten_models"], "goal": f"<= {GOALS['ten_models']}"},
        "gpt4_over_phi2_held_out": {
            "value": row["gpt4_over_phi2"],
            "instructions": row["pairs"],
            "goal": f">= {GOALS['gpt4_over_phi2']}",
        },
        "gpt4_over_phi2_by_source": {s: {"value": v, "instructions": n} for s, (v, n) in row["by_source"].items()},
        "example_data_styles_best_first": list(row["styles"]),
        "example_data_goal": "careful first; refusal, off_topic and repetitive among the last three",
    }
    rule.save(path)
