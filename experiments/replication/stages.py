"""The stages of `replicate.py` that need finished labels: fit the rule, compare it with random data, check it
against the ten models' public win rates."""

import hashlib
import json
import logging
import random
import statistics

import numpy as np
from replicate import DATA, ROOT, RULE_NAME, SMOLLM2_ID, label, score, subset_means


logger = logging.getLogger("replication")


def fit(state: dict, settings: dict, profile: str) -> dict:
    """The rule (best subset of the candidates by BIC), the fit of all candidates, and the noise floor."""
    from hf_instructmining import fit_rule
    from hf_instructmining.offline import OFFLINE_INDICATOR_SPECS

    shape = settings.get("rule") or {}
    candidates = [c for c in settings["candidates"] if c not in shape.get("exclude", [])]
    transforms = shape.get("transforms") or {}
    scored = state["scores"].attach(state["pool"], settings["candidates"])
    done = {r["subset_id"]: r for r in state["store"].records("subset_done")}
    labelled = [s for s in state["subsets"] if s.subset_id in done]
    if len(labelled) < 3:
        raise SystemExit(f"Only {len(labelled)} subsets are labelled in {state['store'].path}: run the `label` stage.")
    # The rule reads some indicators on another scale: it is fitted on the subset means of the transformed values.
    means = subset_means(labelled, _scaled(scored, transforms), candidates)
    rows = [
        {"subset_id": s.subset_id, "eval_loss": done[s.subset_id]["eval_loss"], **means[s.subset_id]} for s in labelled
    ]
    noise = [done[s.subset_id]["eval_loss"] for s in state["noise"].values() if s.subset_id in done]
    losses = [r["eval_loss"] for r in rows]
    training = {k: v for k, v in settings["training"].items() if k != "model"}
    provenance = {
        "source": f"fitted by this project with `python experiments/replication/replicate.py --profile {profile}`",
        "base_model": SMOLLM2_ID,
        "eval_set": (
            f"GPT-4's answers to {settings['eval_instructions']} held-out AlpacaEval instructions "
            "(tatsu-lab/alpaca_eval, seeded sample), never trained on"
        ),
        "fitting_data": (
            f"{len(rows)} Dirichlet mixtures (concentration {settings['concentration']}) of {settings['subset_size']} "
            f"rows of the ten AlpacaEval models' answers to {settings['pool_instructions']} instructions"
        ),
        "labeling": training,
        "note": shape.get("note", ""),
        "noise_floor": {
            "seeds": len(noise),
            "sd_across_seeds": _sd(noise),
            "sd_across_subsets": _sd(losses),
            "signal_to_noise": _sd(losses) / _sd(noise) if len(noise) > 1 and len(losses) > 1 else None,
        },
    }
    if "version" in shape:
        provenance = {"version": shape["version"], **provenance, "changes": shape.get("changes", "")}
    specs = {c: OFFLINE_INDICATOR_SPECS[c] for c in candidates}
    policy = shape.get("out_of_range", "clip")
    best = fit_rule(
        rows, indicators=candidates, selection="bic", name=RULE_NAME, indicator_specs=specs, provenance=provenance,
        transforms=transforms, out_of_range=policy,
    )  # fmt: skip
    every = fit_rule(rows, indicators=candidates, selection="all", indicator_specs=specs, transforms=transforms)
    path = ROOT / settings["rule_file"]
    best.rule.save(path)
    logger.info("Fitted rule saved to %s.\n%s", path, best.report())
    return {"best": best, "all": every, "rows": rows, "noise": noise, "scored": scored}


def _sd(values) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _scaled(scored, transforms: dict):
    """`scored` with each column of `transforms` on its scale (for subset means; rules read raw values)."""
    from hf_instructmining.rules.scales import transform

    for column, name in transforms.items():
        values = transform(np.asarray(scored[column], dtype=float), name, column)
        scored = scored.remove_columns(column).add_column(column, values.tolist())
    return scored


def compare(state: dict, settings: dict) -> list[dict]:
    """The rule's top k pool rows against k random rows, at each size and seed (both arms share the seed)."""
    from hf_instructmining import select_top_k

    rule = state["fit"]["best"].rule
    scored = state["fit"]["scored"]
    scored = scored.add_column("instruct_score", rule.predict(scored).tolist())
    scored = scored.add_column("negative_length", [-x for x in scored["output_length"]])
    # The rule arm's ids name the rule (its domain too: clipping changes the ranking), so that runs stored for another
    # fit (e.g. before more labels) are not reused.
    formula = [rule.intercept, rule.coefficients] + ([rule.domain] if rule.domain else [])
    if rule.transforms or rule.out_of_range != "clip":  # so that the ids of rules without them stay as they were
        formula += [rule.transforms, rule.out_of_range]
    formula = json.dumps(formula, sort_keys=True)
    rule_id = hashlib.sha256(formula.encode()).hexdigest()[:8]
    # The simplest heuristic as a second baseline: the longest answers ("longer is better"), at fewer sizes and seeds.
    longest = settings.get("compare_longest") or {"sizes": [], "seeds": []}
    runs = []
    for seed in sorted(set(settings["compare_seeds"]) | set(longest["seeds"])):
        subsets = {}
        for k in settings["compare_sizes"] if seed in settings["compare_seeds"] else []:
            subsets[f"compare-rule{rule_id}-k{k}-s{seed}"] = select_top_k(scored, k)
            draw = np.random.default_rng([settings["seed"], seed, k]).choice(len(scored), size=k, replace=False)
            subsets[f"compare-random-k{k}-s{seed}"] = scored.select(sorted(draw.tolist()))
        for k in longest["sizes"] if seed in longest["seeds"] else []:
            subsets[f"compare-longest-k{k}-s{seed}"] = select_top_k(scored, k, score_column="negative_length")
        for record in label(subsets, state["eval_set"], settings, state["store"], seed):
            _, arm, k, s = record["subset_id"].split("-")
            runs.append(
                {
                    "selection": "rule" if arm.startswith("rule") else arm,
                    "k": int(k[1:]),
                    "seed": int(s[1:]),
                    "eval_loss": record["eval_loss"],
                }
            )
    return runs


def paired(runs: list[dict], baseline: str = "random") -> list[dict]:
    """Per size: the rule's and the baseline's losses by seed (`rule`, `other`), the mean difference, wins, and a
    one-sided paired t-test (rule < baseline)."""
    from scipy.stats import ttest_rel

    table = []
    for k in sorted({r["k"] for r in runs if r["selection"] == baseline}):
        arms = {
            a: {r["seed"]: r["eval_loss"] for r in runs if r["k"] == k and r["selection"] == a}
            for a in ("rule", baseline)
        }
        seeds = sorted(set(arms["rule"]) & set(arms[baseline]))
        rule, other = [arms["rule"][s] for s in seeds], [arms[baseline][s] for s in seeds]
        p = ttest_rel(rule, other, alternative="less").pvalue if len(seeds) > 1 else float("nan")
        diffs = [a - b for a, b in zip(rule, other, strict=True)]
        table.append(
            {"k": k, "baseline": baseline, "seeds": seeds, "rule": rule, "other": other,
             "diff": statistics.fmean(diffs) if diffs else None, "wins": sum(d < 0 for d in diffs), "p": float(p)}
        )  # fmt: skip
    return table


def check_models(state: dict, settings: dict) -> dict:
    """Each model's mean rule score over its AlpacaEval answers, against the public win rates (never fitted on)."""
    import datasets
    from scipy.stats import spearmanr

    rule = state["fit"]["best"].rule
    data = state["data"]
    # Every candidate, not only the rule's: the perplexity family costs the same two passes for one column or four,
    # and each indicator's own correlation with the win rates shows why the rule ranks the models as it does.
    columns = sorted(set(settings["candidates"]) | set(rule.columns) | {"output_length"})
    held_out = datasets.Dataset.from_list([r for m in sorted(data.answers) for r in held_out_rows(data, m, settings)])
    # The pool is scored already. Neighbours of a held-out answer are searched among the held-out answers, as the
    # pool's among the pool's: both sets hold the ten models' answers to the same instructions.
    score(held_out, columns, state["scores"])
    answers = datasets.concatenate_datasets([state["pool"], held_out])
    scored = state["scores"].attach(answers, columns)
    scored = scored.add_column("instruct_score", rule.predict(scored).tolist())
    win_rates = {}
    for line in (DATA / "alpaca_eval_win_rates.csv").read_text().splitlines()[1:]:
        name, rate, _ = line.split(",")
        win_rates[name] = float(rate)
    frame = scored.to_pandas()
    frame["held_out"] = ~frame["instruction"].isin(data.pool_instructions | data.eval_instructions)
    models = sorted(win_rates, key=lambda m: -win_rates[m])
    table = []
    for model in models:
        part = frame[frame["generator"] == model]
        row = {"model": model, "win_rate": win_rates[model], "rows": len(part), "score": part["instruct_score"].mean()}
        row["score_held_out"] = part.loc[part["held_out"], "instruct_score"].mean()
        row.update({f"mean_{c}": part[c].mean() for c in columns})
        table.append(row)
    rates = [r["win_rate"] for r in table]
    check = {
        "held_out_per_model": settings.get("check_held_out_per_model"),
        "table": table,
        "spearman": spearmanr([r["score"] for r in table], rates).statistic,
        "spearman_held_out": spearmanr([r["score_held_out"] for r in table], rates).statistic,
        "spearman_longer_is_better": spearmanr([-r["mean_output_length"] for r in table], rates).statistic,
        "spearman_by_indicator": {c: spearmanr([r[f"mean_{c}"] for r in table], rates).statistic for c in columns},
        "columns": columns,
        "held_out": held_out,
        "win_rates": win_rates,
    }
    logger.info(
        "Ten models: Spearman of the mean rule score with the win rates %+.2f (held-out answers only %+.2f; longer is "
        "better %+.2f). Each indicator alone: %s.",
        check["spearman"],
        check["spearman_held_out"],
        check["spearman_longer_is_better"],
        ", ".join(f"{c} {rho:+.2f}" for c, rho in check["spearman_by_indicator"].items()),
    )
    return check


def held_out_rows(data, model: str, settings: dict) -> list[dict]:
    """`model`'s answers outside the pool that the check scores (its pool answers are scored already).

    All of them when `check_held_out_per_model` is `null`. Otherwise its answers to a seeded sample of that many
    held-out instructions (outside the pool and the evaluation set, answered by all ten models; the same
    instructions for every model): scoring every answer with the perplexity family takes about ten hours on this
    project's 2-core CPU.
    """
    n = settings.get("check_held_out_per_model")
    if n is None:
        return [r for r in data.rows(model) if r["instruction"] not in data.pool_instructions]
    held_out = sorted(data.answered_by_all - data.pool_instructions - data.eval_instructions)
    return data.rows(model, set(random.Random(settings["seed"]).sample(held_out, min(n, len(held_out)))))
