"""Score instruction data with InstructMining's rule and keep the best rows: `ds.map(instruct_score)`.

`instruct_score` applies the paper's default rule (LLaMA-2-7B, v2/v3):
    log L_eval ~ 0.0274 - 0.0078 reward + 0.4421 understandability - 0.3212 naturalness - 0.1520 coherence
with the paper's models (the OpenAssistant Pythia-1.4B reward model and UniEval), downloaded from the Hub on first
use. Lower scores are better. Pass local copies (or any compatible models) with `--reward-model` and
`--unieval-model`; the scorer then warns that the coefficients were fitted with the paper's models.

    python examples/score_and_select.py --dataset tatsu-lab/alpaca --top-k 1000
    python examples/score_and_select.py --reward-model ./oasst-rm --unieval-model ./unieval-dialog --top-k 50
"""

import argparse

from hf_instructmining.offline import example_data_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=example_data_path(), help="a .jsonl file or a Hub id")
    parser.add_argument("--reward-model", default=None, help="local folder or Hub id replacing the paper's")
    parser.add_argument("--unieval-model", default=None, help="local folder or Hub id replacing the paper's")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--output", default="selected.jsonl")
    args = parser.parse_args()

    import datasets

    from hf_instructmining import InstructScorer, instruct_score, select_top_k
    from hf_instructmining.summary import summarize_dataset

    if args.dataset.endswith((".json", ".jsonl")):
        ds = datasets.load_dataset("json", data_files=args.dataset, split="train")
    else:
        ds = datasets.load_dataset(args.dataset, split="train")

    models = {k: v for k, v in {"reward": args.reward_model, "unieval": args.unieval_model}.items() if v}
    scorer = InstructScorer(models=models) if models else instruct_score
    # Batched map: the scorer sorts each batch by length and runs the models on token-budget batches.
    scored = ds.map(scorer, batched=True, batch_size=256, desc="InstructMining")

    summary = summarize_dataset(scored, scorer.rule)
    print(f"{summary.num_rows} rows scored ({summary.num_invalid} invalid)")
    print(f"predicted log eval loss of the whole dataset: {summary.predicted_log_eval_loss:.4f}")
    for column, mean in summary.means.items():
        print(f"  mean {column:<28} {mean:.4f}")

    selected = select_top_k(scored, args.top_k, deduplicate=True)
    selected.to_json(args.output, lines=True, double_precision=15)
    print(f"kept the {len(selected)} best rows -> {args.output}")
    for row in selected.select(range(min(3, len(selected)))):
        print(f"  {row['instruct_score']:.4f}  {row['instruction'][:70]!r}")


if __name__ == "__main__":
    main()
