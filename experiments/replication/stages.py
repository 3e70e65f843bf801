"""The stages of `replicate.py` that need finished labels: fit the rule, compare it with random data, check it
against the ten models' public win rates."""

import hashlib
import json
import logging
import random
import statistics

import numpy as np
from replicate import DATA, ROOT, RULE_NAME, SMOLLM2_ID, label, renamed, score, subset_means


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
    noise = {
        shape: [done[s.subset_id]["eval_loss"] for s in seeds.values() if s.subset_id in done]
        for shape, seeds in state["noise"].items()
    }
    noise_sd, losses = _pooled_sd(noise.values()), [r["eval_loss"] for r in rows]
    counts = {shape: sum(s.subset_id in ids for s in labelled) for shape, ids in state["shapes"].items()}
    training = {k: v for k, v in settings["training"].items() if k != "model"}
    provenance = {
        "source": f"fitted by this project with `python experiments/replication/replicate.py --profile {profile}`",
        "base_model": SMOLLM2_ID,
        "eval_set": (
            f"GPT-4's answers to {settings['eval_instructions']} held-out AlpacaEval instructions "
            "(tatsu-lab/alpaca_eval, seeded sample), never trained on"
        ),
        "fitting_data": (
            f"{counts['mixtures']} Dirichlet mixtures (concentration {settings['concentration']})"
            + (
                f" and {counts['one_answer']} of one answer per instruction (concentration "
                f"{settings['one_answer']['concentration']})"
                if counts.get("one_answer")
                else ""
            )
            + f" of {settings['subset_size']} rows of the ten AlpacaEval models' answers to "
            f"{settings['pool_instructions']} instructions"
        ),
        "labeling": training,
        "note": shape.get("note", ""),
        "noise_floor": {
            "seeds": {shape: len(values) for shape, values in noise.items()},
            "sd_across_seeds": noise_sd,
            "sd_across_subsets": _sd(losses),
            "signal_to_noise": _sd(losses) / noise_sd if noise_sd and len(losses) > 1 else None,
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
    return {
        "best": best, "all": every, "rows": rows, "noise": noise, "noise_sd": noise_sd, "scored": scored,
        "shapes": {shape: [r for r in rows if r["subset_id"] in ids] for shape, ids in state["shapes"].items()},
    }  # fmt: skip


def _sd(values) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _pooled_sd(groups) -> float | None:
    """The sd across seeds pooled over the noise floors of each shape (variances weighted by their degrees of
    freedom): one seed's spread, measured on more than one subset."""
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return None
    squares = sum((len(g) - 1) * statistics.variance(g) for g in groups)
    return (squares / sum(len(g) - 1 for g in groups)) ** 0.5


def _scaled(scored, transforms: dict):
    """`scored` with each column of `transforms` on its scale (for subset means; rules read raw values)."""
    from hf_instructmining.rules.scales import transform

    for column, name in transforms.items():
        values = transform(np.asarray(scored[column], dtype=float), name, column)
        scored = scored.remove_columns(column).add_column(column, values.tolist())
    return scored


ARMS = ("rule", "random", "longest", "ifd")
ARM_NAMES = {
    "random": "random rows",
    "longest": "the longest answers",
    "ifd": "the top rows by IFD (Superfiltering, Cherry LLM)",
}
POOL_NAMES = {"pool": "the pool", "held_out": "the held-out pool (one answer per instruction)"}


def compare(state: dict, settings: dict, train: bool = True) -> list[dict]:
    """The rule's top k rows against k random rows, the k longest answers and the top k by IFD, at each size and
    seed (every arm of a seed shares it), on the pool and on the held-out pool of one answer per instruction.

    With `train=False`, only the runs the label store holds (for the check stage: nothing trains).
    """
    rule = state["fit"]["best"].rule
    rule_id = _rule_id(rule)
    pools = {"pool": (_with_selection_columns(state["fit"]["scored"], rule), _pool_plan(settings))}
    held = settings.get("held_out_pool")
    if held:
        pools["held_out"] = (_held_out_pool(state, held["instructions"], rule), {arm: held for arm in ARMS})
    seeds = sorted({seed for _, plan in pools.values() for spec in plan.values() for seed in spec["seeds"]})
    done = {r["subset_id"]: r for r in state["store"].records("subset_done")}
    runs = []
    for seed in seeds:
        subsets, arms = {}, {}
        for pool, (scored, plan) in pools.items():
            prefix = "compare" if pool == "pool" else "heldout"
            for arm, spec in plan.items():
                for k in spec["sizes"] if seed in spec["seeds"] else []:
                    # The rule arm's ids name the rule (see `_rule_id`), so that runs of another fit are not reused.
                    subset_id = f"{prefix}-{f'rule{rule_id}' if arm == 'rule' else arm}-k{k}-s{seed}"
                    arms[subset_id] = {"pool": pool, "selection": arm, "k": k, "seed": seed}
                    if train or subset_id in done:
                        subsets[subset_id] = _select(arm, scored, k, [settings["seed"], seed, k])
        if train and subsets:
            records = label(subsets, state["eval_set"], settings, state["store"], seed)
        else:
            records = [done[i] for i in subsets]
        runs += [{**arms[r["subset_id"]], "eval_loss": r["eval_loss"]} for r in records]
    return runs


def _pool_plan(settings: dict) -> dict[str, dict]:
    """Arm -> the sizes and seeds it runs at on the pool (random shares the rule's)."""
    main = {"sizes": settings["compare_sizes"], "seeds": settings["compare_seeds"]}
    empty = {"sizes": [], "seeds": []}
    return {
        "rule": main,
        "random": main,
        "longest": settings.get("compare_longest") or empty,
        "ifd": settings.get("compare_ifd") or empty,
    }


def _rule_id(rule) -> str:
    """A short hash of what ranks the rows: formula, domain (clipping changes the ranking), scales and policy."""
    formula = [rule.intercept, rule.coefficients] + ([rule.domain] if rule.domain else [])
    if rule.transforms or rule.out_of_range != "clip":  # so that the ids of rules without them stay as they were
        formula += [rule.transforms, rule.out_of_range]
    return hashlib.sha256(json.dumps(formula, sort_keys=True).encode()).hexdigest()[:8]


def _with_selection_columns(scored, rule):
    """`scored` with the columns each arm ranks by (lowest first): the rule's score, negated length and IFD."""
    scored = scored.add_column("instruct_score", rule.predict(scored).tolist())
    scored = scored.add_column("negative_length", [-x for x in scored["output_length"]])
    return scored.add_column("negative_ifd", [-x for x in scored["ifd"]])


def _select(arm: str, scored, k: int, draw_seed: list[int]):
    from hf_instructmining import select_top_k

    if arm == "rule":
        return select_top_k(scored, k)
    if arm == "random":
        draw = np.random.default_rng(draw_seed).choice(len(scored), size=k, replace=False)
        return scored.select(sorted(draw.tolist()))
    if arm == "longest":  # "longer is better", the simplest heuristic
        return select_top_k(scored, k, score_column="negative_length")
    # IFD as Superfiltering (Li et al. 2024) and Cherry LLM select: the highest instruction-following difficulty,
    # after dropping rows with IFD >= 1 (the instruction does not help predict the answer: misaligned pairs).
    return select_top_k(scored.filter(lambda r: r["ifd"] < 1), k, score_column="negative_ifd")


def _held_out_pool(state: dict, n_instructions: int, rule):
    """The held-out pool of one answer per instruction, scored with what the arms rank by (only what is missing)."""
    rows = state["data"].one_answer_pool(n_instructions)
    columns = sorted(set(rule.columns) | {"output_length", "ifd"})
    score(rows, columns, state["scores"])
    return _with_selection_columns(state["scores"].attach(rows, columns), rule)


def paired(runs: list[dict], baseline: str = "random", pool: str = "pool") -> list[dict]:
    """Per size: the rule's and the baseline's losses by seed (`rule`, `other`), the mean difference, wins, and a
    one-sided paired t-test (rule < baseline), on `pool`."""
    from scipy.stats import ttest_rel

    runs = [r for r in runs if r.get("pool", "pool") == pool]
    table = []
    for k in sorted({r["k"] for r in runs if r["selection"] == baseline}):
        arms = {
            a: {r["seed"]: r["eval_loss"] for r in runs if r["k"] == k and r["selection"] == a}
            for a in ("rule", baseline)
        }
        seeds = sorted(set(arms["rule"]) & set(arms[baseline]))
        if not seeds:  # the rule's runs of this size are not in the store yet
            continue
        rule, other = [arms["rule"][s] for s in seeds], [arms[baseline][s] for s in seeds]
        p = ttest_rel(rule, other, alternative="less").pvalue if len(seeds) > 1 else float("nan")
        diffs = [a - b for a, b in zip(rule, other, strict=True)]
        table.append(
            {"k": k, "pool": pool, "baseline": baseline, "seeds": seeds, "rule": rule, "other": other,
             "diff": statistics.fmean(diffs), "wins": sum(d < 0 for d in diffs), "p": float(p)}
        )  # fmt: skip
    return table


def head_to_head(runs: list[dict]) -> list[dict]:
    """Every paired table: each pool, each baseline, each size."""
    return [row for pool in POOL_NAMES for arm in ARMS[1:] for row in paired(runs, arm, pool)]


def print_comparison(runs: list[dict]) -> None:
    """The check command's tables of paired runs: the rule against each baseline, beside the goal (p < 0.05)."""
    print("\nPeers, head to head (eval loss, lower is better; goal: the rule wins with p < 0.05):\n")  # noqa: T201
    print("| pool | against | k | seeds | rule | baseline | rule - baseline | rule better | p | goal |")  # noqa: T201
    print("|---|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    for row in head_to_head(runs):
        n = len(row["seeds"])
        met = "met" if row["p"] < 0.05 and row["diff"] < 0 else ("missed" if n > 1 else "too few seeds")
        print(  # noqa: T201
            f"| {row['pool']} | {row['baseline']} | {row['k']} | {n} | {statistics.fmean(row['rule']):.4f} | "
            f"{statistics.fmean(row['other']):.4f} | {row['diff']:+.4f} | {row['wins']} of {n} | {row['p']:.3g} | "
            f"{met} |"
        )


def transfer(state: dict, settings: dict, train: bool = True) -> list[dict]:
    """Mixtures of answers to instructions the rule never saw, one set per group of AlpacaEval instruction sources,
    labelled like the fitting mixtures; beside each label, the rule's prediction from the subset's mean indicators.

    The instructions are those after the held-out pool in the shuffle, minus the ten-model check's sample, so that
    neither the fit, the paired runs nor the checks saw them. With `train=False`, only the runs the store holds.
    """
    import datasets

    from hf_instructmining import sample_subsets
    from hf_instructmining.labeling import split_by_column

    spec, data, rule = settings["transfer"], state["data"], state["fit"]["best"].rule
    held = (settings.get("held_out_pool") or {}).get("instructions", 0)
    checked = {r["instruction"] for r in held_out_rows(data, "gpt4", settings)}
    unseen = [i for i in data.after_pool[held:] if i not in checked]
    groups = {}
    for group, sources in spec["groups"].items():
        answers = data.answers_to([i for i in unseen if data.source[i] in sources])
        groups[group] = [
            renamed(s, f"transfer-{group}-{s.subset_id}")
            for s in sample_subsets(
                split_by_column(answers, "generator"),
                n_subsets=spec["n_subsets"],
                subset_size=settings["subset_size"],
                seed=settings["seed"],
                concentration=settings["concentration"],
            )
        ]
    subsets = [s for group in groups.values() for s in group]
    # Only the rows the mixtures hold are scored (the rule's columns), before any training; read back once.
    rows = datasets.concatenate_datasets([s.dataset for s in subsets])
    score(rows, rule.columns, state["scores"])
    rows = _scaled(state["scores"].attach(rows, rule.columns), rule.transforms or {}).to_pandas()
    done = {r["subset_id"]: r for r in state["store"].records("subset_done")}
    if train:
        done.update({r["subset_id"]: r for r in label(subsets, state["eval_set"], settings, state["store"])})
    runs, start = [], 0
    for group, members in groups.items():
        for subset in members:
            means, start = rows[rule.columns][start : start + len(subset)].mean().to_frame().T, start + len(subset)
            if subset.subset_id in done:
                runs.append(
                    {"group": group, "subset_id": subset.subset_id, "eval_loss": done[subset.subset_id]["eval_loss"],
                     "predicted": float(rule.predict(means, on_rule_scale=True)[0]), **means.iloc[0].to_dict()}
                )  # fmt: skip
    return runs


def transfer_table(runs: list[dict], fit: dict) -> list[dict]:
    """Per group, and for the fitting mixtures in sample (`fit`, the fit stage's result): how well the rule's
    predicted log eval loss orders and fits the observed one."""
    import pandas as pd
    from scipy.stats import spearmanr

    rows = fit["rows"]
    predicted = fit["best"].rule.predict(pd.DataFrame(rows), on_rule_scale=True)
    table = []
    groups = {"fitting subsets (in sample)": [{**r, "predicted": p} for r, p in zip(rows, predicted, strict=True)]}
    groups.update(_across_shapes(fit))
    for run in runs:
        groups.setdefault(run["group"], []).append(run)
    groups.update(_across_sources(runs, fit["best"].rule))
    for group, rows in groups.items():
        observed = np.log([r["eval_loss"] for r in rows])
        predicted = np.array([r["predicted"] for r in rows])
        residual = observed - predicted
        rank = spearmanr(predicted, observed) if len(rows) > 2 else None
        table.append(
            {
                "group": group,
                "n": len(rows),
                "loss_range": (float(np.exp(observed.min())), float(np.exp(observed.max()))),
                "sd": _sd([r["eval_loss"] for r in rows]),
                "spearman": float(rank.statistic) if rank else float("nan"),
                "p": float(rank.pvalue) if rank else float("nan"),
                "r_squared": float(1 - (residual**2).sum() / ((observed - observed.mean()) ** 2).sum()),
                "bias": float(residual.mean()),
            }
        )
    return table


def _across_shapes(fit: dict) -> dict[str, list[dict]]:
    """Each shape of fitting subsets predicted by the rule's indicators refitted on the other shapes alone (same
    scales and policy): does a fit on mixtures that repeat instructions hold on one answer per instruction, and back."""
    shapes = {
        "one answer per instruction" if shape == "one_answer" else shape: rows
        for shape, rows in fit["shapes"].items()
        if rows
    }
    return _leave_one_out(shapes, fit["best"].rule, "{}, by a fit on the other shape alone")


def _across_sources(runs: list[dict], rule) -> dict[str, list[dict]]:
    """Each group of instruction sources predicted by the rule's indicators refitted on the other groups' labels
    alone: a fit that never saw the group's sources, nor the pool's instructions."""
    groups = {}
    for run in runs:
        groups.setdefault(run["group"], []).append(run)
    return _leave_one_out(groups, rule, "{}, by a fit on the other group's labels alone")


def _leave_one_out(groups: dict[str, list[dict]], rule, name: str) -> dict[str, list[dict]]:
    """`name.format(group)` -> each group's rows with `predicted`: the log eval loss that `rule`'s indicators, scales
    and policy, refitted on the other groups' rows alone, predict from each subset's means (on the rule's scale).
    A group whose others hold too few rows for the refit is left out."""
    import pandas as pd

    from hf_instructmining import fit_rule

    predicted = {}
    for held, members in groups.items():
        others = [r for group, rows in groups.items() if group != held for r in rows]
        if len(others) <= len(rule.coefficients) + 2:
            continue
        refit = fit_rule(
            others, indicators=list(rule.coefficients), transforms=rule.transforms, out_of_range=rule.out_of_range
        ).rule
        values = refit.predict(pd.DataFrame(members), on_rule_scale=True)
        predicted[name.format(held)] = [{**r, "predicted": float(p)} for r, p in zip(members, values, strict=True)]
    return predicted


def transfer_markdown(runs: list[dict], fit: dict) -> list[str]:
    """The table of `transfer_table` as Markdown lines."""
    lines = [
        "| mixtures | n | eval loss range (sd) | Spearman (predicted, observed), p | R² | mean residual |",
        "|---|---|---|---|---|---|",
    ]
    for row in transfer_table(runs, fit):
        low, high = row["loss_range"]
        lines.append(
            f"| {row['group']} | {row['n']} | {low:.4f}-{high:.4f} ({_fmt_sd(row['sd'])}) | {row['spearman']:+.2f}, {row['p']:.2g} | "
            f"{row['r_squared']:.2f} | {row['bias']:+.4f} |"
        )
    return lines


def _fmt_sd(sd: float | None) -> str:
    return "n/a" if sd is None else f"{sd:.4f}"


def print_transfer(runs: list[dict] | None, fit: dict) -> None:
    """The check command's table of `transfer`: the rule's predicted labels against the observed, out of sample."""
    if runs:
        print("\nLabels of mixtures on instructions never seen, predicted by the rule (log eval loss):\n")  # noqa: T201
        print("\n".join(transfer_markdown(runs, fit)))  # noqa: T201


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
