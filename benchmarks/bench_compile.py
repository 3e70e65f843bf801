"""`torch.compile` of SmolLM2's body at static shapes against eager, in bf16 on this CPU (issue 29's next lever).

The shipped offline rule spends most of its scoring time in SmolLM2-135M's body, and a profile of that pass found
the element-wise operators around the matrix multiplies (RMSNorm's float32 round trip, rotary embeddings, SiLU) at
about half of it: what a compiler fuses. This measures what fusing buys before any scoring code depends on it:
the body (`model.model`, the pass `hf_instructmining.indicators._lm_nll` runs) on random token ids at a few static
(batch, length) shapes of one token budget, eager and compiled (`torch.compile(dynamic=False)`, inductor), calls
interleaved so that drift in the machine's speed hits both alike, and how far the compiled hidden states lie from
the eager ones.

    python benchmarks/bench_compile.py                       # bf16 where the CPU has it, 3 shapes, 6 calls each
    python benchmarks/bench_compile.py --shapes 8x256 --calls 10

The first compiled call of each shape includes compiling it (inductor caches kernels on disk, so a second run of
the script compiles faster); the timed calls come after it.

`--scoring N` measures the lever where it would be used: the shipped rule's whole scoring
(`compute_indicators(ds, rule="instructmining-smollm2-135m")`) of N AlpacaEval answers, eager against compiled, each
side in a child process (warm-up on 16 rows, then the same N rows scored twice: on the compiled side the first pass
compiles the shapes it meets, one graph per bucket). The compiled side patches the pass for static shapes: lengths padded to a multiple of 64, rows padded to
the 1,024-token budget's row count, and the shared-prefix key/value cache off (a cache object would not compile
as a static input). It prints rows/s and the Spearman of each column against the eager side.

    python benchmarks/bench_compile.py --scoring 210
"""

import argparse
import time

import torch

from hf_instructmining.loading import default_dtype
from hf_instructmining.offline import smollm2_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["8x256", "16x128", "4x512"], help="batch x length")
    parser.add_argument("--calls", type=int, default=6, help="timed calls per side and shape, interleaved")
    parser.add_argument("--dtype", default=None, help="bfloat16 or float32; default: what `auto` picks here")
    parser.add_argument("--scoring", type=int, default=0, help="rows of the rule's whole scoring, eager vs compiled")
    parser.add_argument("--side", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # a child's side
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return scoring_side(args.side, args.scoring, args.out)
    if args.scoring:
        return compare_scoring(args.scoring)
    from transformers import AutoModelForCausalLM

    dtype = args.dtype or default_dtype("cpu")
    body = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=getattr(torch, dtype)).eval().model
    compiled = torch.compile(body, dynamic=False)
    print(f"SmolLM2-135M body, {dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    generator = torch.Generator().manual_seed(0)
    for shape in args.shapes:
        batch, length = (int(x) for x in shape.split("x"))
        ids = torch.randint(100, 40_000, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length // 2 :] = 0  # one padded row, as token-budget batches have

        def forward(module, ids=ids, mask=mask):
            with torch.inference_mode():
                start = time.perf_counter()
                hidden = module(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                return time.perf_counter() - start, hidden

        forward(body)
        compile_s, _ = forward(compiled)
        times, outputs = {"eager": [], "compiled": []}, {}
        for _ in range(args.calls):
            for side, module in (("eager", body), ("compiled", compiled)):
                seconds, outputs[side] = forward(module)
                times[side].append(seconds)
        eager, fused = (sorted(times[side])[len(times[side]) // 2] for side in ("eager", "compiled"))
        # Over the real tokens: what padding positions hold is never read.
        real = mask.bool()
        eager_states, compiled_states = (outputs[side][real].float() for side in ("eager", "compiled"))
        difference = (compiled_states - eager_states).norm() / eager_states.norm()
        print(
            f"{batch}x{length}: eager {1000 * eager:.0f} ms, compiled {1000 * fused:.0f} ms (median of {args.calls}) "
            f"-> ratio {eager / fused:.2f}x | first compiled call {compile_s:.1f} s | hidden states of the real tokens, "
            f"relative L2 difference {difference:.1e}",
            flush=True,
        )


def compare_scoring(rows: int) -> None:
    """Both sides of `--scoring`, each in a fresh process, and the agreement of their scores."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from scipy.stats import spearmanr

    values = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("eager", "compiled"):
            out = Path(tmp) / f"{side}.json"
            command = [sys.executable, __file__, "--side", side, "--scoring", str(rows), "--out", str(out)]
            subprocess.run(command, check=True)
            values[side] = json.loads(out.read_text())
    for column in values["eager"]:
        rho = spearmanr(values["eager"][column], values["compiled"][column]).statistic
        print(f"{column}: Spearman compiled against eager {rho:.5f} over {rows} rows")


def scoring_side(side: str, rows: int, out: str) -> None:
    """One side of `--scoring`: the rule's whole scoring of `rows` answers, timed twice after a warm-up."""
    import json
    import math
    import sys
    from pathlib import Path

    import datasets

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_rule_throughput import RULE, load_rows

    from hf_instructmining import compute_indicators
    from hf_instructmining.indicators import _lm_nll, _model_base

    datasets.disable_caching()
    datasets.disable_progress_bars()
    if side == "compiled":

        def static_pad(sequences, pad_id, device):
            width = 64 * math.ceil(max(len(s) for s in sequences) / 64)
            count = max(len(sequences), 1024 // width)
            ids = torch.full((count, width), pad_id, dtype=torch.long)
            mask = torch.zeros((count, width), dtype=torch.long)
            for row, sequence in enumerate(sequences):
                ids[row, : len(sequence)] = torch.as_tensor(sequence)
                mask[row, : len(sequence)] = 1
            mask[len(sequences) :, 0] = 1  # filler rows: one real token, never read
            return ids.to(device), mask.to(device)

        load = _model_base.load_model

        def compiled_load(*args, **kwargs):
            model = load(*args, **kwargs)
            if hasattr(model, "model") and not isinstance(model.model, torch._dynamo.eval_frame.OptimizedModule):
                model.model = torch.compile(model.model, dynamic=False)
            return model

        _lm_nll.pad, _lm_nll.shared_prefix_length = static_pad, lambda rows: 0
        # One graph per (rows, length) bucket: dynamo's default of 8 would run the other buckets eagerly.
        torch._dynamo.config.recompile_limit = 64
        _model_base.load_model = compiled_load
    dataset = datasets.Dataset.from_dict(load_rows(rows + 16))
    compute_indicators(dataset.select(range(16)), rule=RULE)
    for attempt in ("first pass", "second pass"):
        start = time.perf_counter()
        scored = compute_indicators(dataset.select(range(16, rows + 16)), rule=RULE)
        seconds = time.perf_counter() - start
        print(f"{side:<8} {attempt}: {rows} rows in {seconds:.1f} s, {rows / seconds:.2f} rows/s", flush=True)
    columns = ("perplexity", "end_of_turn_logprob", "output_length")
    Path(out).write_text(json.dumps({c: list(scored[c]) for c in columns}))


if __name__ == "__main__":
    main()
