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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
