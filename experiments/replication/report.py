"""Writes `RESULTS.md` and the plots of `replicate.py` from its finished runs (nothing here trains or scores)."""

import json
import math
import statistics
from collections import Counter
from pathlib import Path


def write_report(
    folder: Path,
    *,
    profile,
    settings,
    scored,
    eval_set,
    labels,
    fit,
    full_fit,
    runs,
    search,
    demo,
    promoted,
    timings,
) -> None:
    import yaml

    plot_fit(fit, labels, folder / f"fit-{profile}.png")
    comparison = summarize_comparison(runs)
    plot_comparison(comparison, search, folder / f"selected-vs-random-{profile}.png")
    search.plot(folder / f"search-{profile}.png", title="BlendSearch over k (rule-selected rows)")

    indicators = settings["indicators"]
    sections = [
        "# InstructMining in miniature on real data",
        "Does data selected by a fitted InstructMining rule beat random data of the same size? This experiment runs "
        "the paper's recipe with this project's pipeline on public data nobody here wrote, at a scale that fits one "
        "working session on a 2-core CPU. Everything below is written by the script from its finished runs.",
        "## Reproduce\n\n"
        "```bash\n"
        f"python experiments/replication/replicate.py --profile {profile}\n"
        "```\n\n"
        f"Settings: `experiments/replication/config.yaml`, profile `{profile}`. Every finetuning run is in "
        f"`labels-{profile}.jsonl`; re-running reads them back and trains nothing already done. "
        + run_times(timings, labels, runs, search)
        + "\n\n```yaml\n"
        + yaml.safe_dump(settings, sort_keys=False)
        + "```",
        "## Data\n\n"
        f"- **Pool**: {len(scored):,} rows: the responses of ten models to {settings['pool_instructions']} AlpacaEval "
        "instructions (`../shared/data/alpaca_eval_outputs`), one source per model.\n"
        f"- **Evaluation set**: {len(eval_set)} Self-Instruct user-oriented instructions with their human-written "
        "answers (`../shared/data/self_instruct/user_oriented_instructions.jsonl`); never trained on.\n"
        f"- **Indicators**: {', '.join(f'`{i}`' for i in indicators)} (every indicator that runs offline: the "
        "reward model and UniEval do not install here).\n\n" + pool_table(scored, indicators, settings),
        "## The fitted rule\n\n"
        f"{fit.n_subsets} labelled subsets (random Dirichlet mixtures of the ten sources, {settings['subset_size']} "
        "rows each), LoRA on SmolLM2-135M-Instruct, target log eval loss. Best subset of indicators by BIC:\n\n"
        f"```\n{fit.report()}\n```\n\n"
        f"All {len(full_fit.candidates)} candidate indicators together (for their VIF and signs):\n\n"
        f"```\n{full_fit.report()}\n```\n\n"
        f"![observed against predicted log eval loss](fit-{profile}.png)\n\n"
        f"The rule is saved with its provenance in `rule-{profile}.json`.",
        "## Rule-selected against random data\n\n"
        "At each size k, the top k rows by the rule's predicted loss against k rows drawn at random from the same "
        "pool. A seed sets the training seed (both arms) and the random draw; the rule's top k rows are the same "
        "for every seed. Lower eval loss is better.\n\n"
        + comparison_table(comparison)
        + "\n\n"
        + composition_table(runs, scored)
        + f"\n\n![selected against random](selected-vs-random-{profile}.png)",
        "## Searching the subset size\n\n"
        f"`search_subset_size` (FLAML BlendSearch, log scale) over k in [{settings['search_low']}, "
        f"{settings['search_high']}], {settings['search_trials']} finetuning runs on the top k rows by the rule:\n\n"
        + search_table(search)
        + f"\n\nBest size: **k = {search.best_k}** (eval loss {search.best_loss:.4f}).\n\n"
        f"![search curve](search-{profile}.png)",
        "## What the evidence says\n\n" + verdict(fit, comparison, search),
        "## The offline demo's rule\n\n" + demo_comparison(fit, demo, promoted),
    ]
    (folder / "RESULTS.md").write_text("\n\n".join(sections) + "\n")


def pool_table(scored, indicators: list[str], settings) -> str:
    frame = scored.to_pandas()
    grouped = frame.groupby("generator")
    header = "| source | rows | " + " | ".join(f"mean `{i}`" for i in indicators) + " | mean rule score |"
    lines = [header, "|" + "---|" * (len(indicators) + 3)]
    order = grouped["instruct_score"].mean().sort_values().index
    for name in order:
        group = grouped.get_group(name)
        cells = " | ".join(f"{group[i].mean():.3g}" for i in indicators)
        lines.append(f"| {name} | {len(group)} | {cells} | {group['instruct_score'].mean():.4f} |")
    return "Sources, best first by the fitted rule's mean predicted log loss:\n\n" + "\n".join(lines)


def summarize_comparison(runs) -> list[dict]:
    rows = []
    for k in sorted({r["k"] for r in runs}):
        losses = {
            sel: {r["seed"]: r["record"]["eval_loss"] for r in runs if r["k"] == k and r["selection"] == sel}
            for sel in ("rule", "random")
        }
        seeds = sorted(set(losses["rule"]) & set(losses["random"]))
        wins = sum(losses["rule"][s] < losses["random"][s] for s in seeds)
        rows.append({"k": k, "seeds": seeds, "wins": wins, **{sel: list(v.values()) for sel, v in losses.items()}})
    return rows


def _mean_sd(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def comparison_table(comparison) -> str:
    lines = [
        "| k | seeds | rule-selected eval loss (mean ± sd) | random eval loss (mean ± sd) | rule − random | "
        "rule better (paired by seed) |",
        "|---|---|---|---|---|---|",
    ]
    for row in comparison:
        diff = statistics.fmean(row["rule"]) - statistics.fmean(row["random"])
        lines.append(
            f"| {row['k']} | {len(row['seeds'])} | {_mean_sd(row['rule'])} | {_mean_sd(row['random'])} | "
            f"{diff:+.4f} | {row['wins']} of {len(row['seeds'])} |"
        )
    return "\n".join(lines)


def composition_table(runs, scored) -> str:
    """Which sources the rule's top k rows come from, against their share of the pool."""
    from hf_instructmining import select_top_k

    pool = Counter(scored["generator"])
    sizes = sorted({r["k"] for r in runs if r["selection"] == "rule"})
    columns = " | ".join(f"top {k}" for k in sizes)
    lines = [f"| source | pool share | {columns} |", "|---|---|" + "---|" * len(sizes)]
    top = {k: Counter(select_top_k(scored, k)["generator"]) for k in sizes}
    for name in sorted(pool, key=lambda n: -top[sizes[0]][n]):
        shares = " | ".join(f"{top[k][name] / k:.0%}" for k in sizes)
        lines.append(f"| {name} | {pool[name] / len(scored):.0%} | {shares} |")
    return "Where the rule's top rows come from:\n\n" + "\n".join(lines)


def run_times(timings: dict, labels, runs, search) -> str:
    """What a run from an empty store costs (the finetuning time each record kept), and this run's wall time."""

    def minutes(records) -> float:
        return sum(r["train_runtime_s"] + r["eval_runtime_s"] for r in records) / 60

    recorded = {
        "labelling": minutes(labels),
        "rule against random": minutes(run["record"] for run in runs),
        "search": sum(t["time_s"] for t in search.trace) / 60,
    }
    return (
        "Finetuning and evaluation time kept in the store (what a run from an empty store spends on them): "
        + ", ".join(f"{k} {v:.1f} min" for k, v in recorded.items())
        + ". Wall time of the run that wrote this file, which trains only what the store lacks and reads the scored pool "
        "back from `work_dir` when it is cached there: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        + "."
    )


def search_table(search) -> str:
    lines = ["| trial | k | eval loss | time (s) |", "|---|---|---|---|"]
    for t in search.trace:
        if t["selection"] == "rule":
            lines.append(f"| {t['trial']} | {t['k']} | {t['loss']:.4f} | {t['time_s']:.0f} |")
    return "\n".join(lines)


def verdict(fit, comparison, search) -> str:
    lines = []
    cv = fit.cv_r_squared
    lines.append(
        f"- **The rule**: {', '.join(f'`{i}`' for i in fit.indicators) or 'no indicator'} explain "
        f"{fit.r_squared:.0%} of the variance of log eval loss across {fit.n_subsets} subsets in sample, and "
        + ("an undefined share" if cv is None else f"{cv:.0%}")
        + " out of sample (cross-validated R²)."
        + (
            " Out of sample the rule predicts worse than the mean: it does not generalise."
            if cv is not None and cv < 0
            else ""
        )
    )
    for row in comparison:
        diff = statistics.fmean(row["rule"]) - statistics.fmean(row["random"])
        spread = max(statistics.stdev(row["rule"]), statistics.stdev(row["random"])) if len(row["seeds"]) > 1 else 0
        if diff < 0 and row["wins"] == len(row["seeds"]) and -diff > spread:
            word = "beats random"
        elif diff < 0:
            word = "is ahead of random on average, but within the seed-to-seed spread"
        else:
            word = "**fails to beat random**"
        lines.append(
            f"- **k = {row['k']}**: rule-selected data {word} (rule − random = {diff:+.4f}, better in "
            f"{row['wins']} of {len(row['seeds'])} seeds, largest sd {spread:.4f})."
        )
    curve = search.curve("rule")
    losses = [loss for _, loss in curve]
    interior = any(losses[i] < losses[i - 1] and losses[i] < losses[i + 1] for i in range(1, len(losses) - 1))
    turns = sum((b - a) * (c - b) < 0 for a, b, c in zip(losses, losses[1:], losses[2:], strict=False))
    lines.append(
        f"- **Size**: along the search the loss is {'non-monotone' if turns else 'monotone'} in k "
        f"({turns} change(s) of direction over {len(curve)} sizes"
        + (", with an interior minimum" if interior else "")
        + f"); the best size found is k = {search.best_k}."
    )
    gaps = [statistics.fmean(r["random"]) - statistics.fmean(r["rule"]) for r in comparison]
    if len(gaps) > 1:
        shrinking = all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
        lines.append(
            "- **Small sizes**: the paper found the rule's advantage largest at small sizes; here the advantage "
            + ("shrinks" if shrinking else "does not shrink steadily")
            + " as k grows ("
            + ", ".join(f"k = {r['k']}: {g:+.4f}" for r, g in zip(comparison, gaps, strict=True))
            + ")."
        )
    lines.append(
        "- **Caveats**: a 135M model, LoRA for a few steps, short sequences and a few dozen labels; differences of a "
        "few thousandths in loss are within what the training seed alone moves. The scale is the point: every step "
        "is the real pipeline, and the `gpu` profile of `config.yaml` runs the same script at a larger scale."
    )
    return "\n".join(lines)


def demo_comparison(fit, demo, promoted: bool) -> str:
    old = demo.provenance.get("fit", {})
    new = fit.rule.provenance["fit"]

    def fmt(value):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    table = (
        "| rule | data | subsets | R² | CV R² |\n|---|---|---|---|---|\n"
        f"| this fit | AlpacaEval pool | {new['n_subsets']} | {fmt(new['r_squared'])} | {fmt(new['cv_r_squared'])} |\n"
        f"| demo rule before this run | project example data | {old.get('n_subsets', 'n/a')} | "
        f"{fmt(old.get('r_squared'))} | {fmt(old.get('cv_r_squared'))} |"
    )
    decision = (
        "This fit is better supported (more subsets and a higher cross-validated R²), so it became the demo's rule "
        "(`hf_instructmining/builtin_rules/instructmining-smollm2-135m-demo.json`, run with `--update-demo-rule`)."
        if promoted
        else "The demo keeps its rule: this run did not replace it (it is replaced only with `--update-demo-rule` "
        "and only by a fit with more subsets and a higher cross-validated R²)."
    )
    return f"{table}\n\n{decision}\n\nThe rule JSON:\n\n```json\n{json.dumps(fit.rule.to_dict(), indent=2)}\n```"


def plot_fit(fit, labels, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    observed = [math.log(r["eval_loss"]) for r in labels]
    predicted = fit.rule.predict({name: [r["indicator_means"][name] for r in labels] for name in fit.indicators})
    figure = Figure(figsize=(5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.scatter(predicted, observed, color="tab:blue")
    low, high = min(min(observed), min(predicted)), max(max(observed), max(predicted))
    ax.plot([low, high], [low, high], color="tab:gray", linestyle="--", label="y = x")
    ax.set_xlabel("predicted log eval loss (rule)")
    ax.set_ylabel("observed log eval loss")
    ax.set_title(f"{fit.n_subsets} labelled subsets, R² = {fit.r_squared:.2f}")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)


def plot_comparison(comparison, search, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ks = [row["k"] for row in comparison]
    for selection, style in (
        ("rule", {"color": "tab:blue", "marker": "o"}),
        ("random", {"color": "tab:gray", "marker": "s"}),
    ):
        means = [statistics.fmean(row[selection]) for row in comparison]
        sds = [statistics.stdev(row[selection]) if len(row[selection]) > 1 else 0 for row in comparison]
        label = "top k by the rule" if selection == "rule" else "k random rows"
        ax.errorbar(ks, means, yerr=sds, capsize=4, label=f"{label} (mean ± sd over seeds)", **style)
    ax.set_xscale("log")
    ax.set_xlabel("training rows (k)")
    ax.set_ylabel("eval loss")
    ax.set_title("Rule-selected against random data")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)
