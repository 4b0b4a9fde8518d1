"""What one forward pass costs as more sequences share it (no server: the API's batches).

A diffusion model in llama.cpp has no KV cache, so a pass over N sequences is one micro-batch of all
their positions, with a mask keeping each sequence to itself. Prints the time per pass and per
sequence-pass for each N, best of --reps, so the point where sharing stops paying can be read off.

    python scripts/bench_pass_sharing.py -m tiny-llada --sizes 1,2,4,8,16,32
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="tiny-llada")
    ap.add_argument("--sizes", default="1,2,4,8,16,32")
    ap.add_argument("--prompt", default="reverse hello")
    ap.add_argument("--gen-length", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    import dlmcli

    with dlmcli.load(a.model, n_threads=a.threads) as m:
        p = m.params(temperature=0, gen_length=a.gen_length)
        print("| sequences | ms per pass | forward ms | ms per sequence-pass |\n|---:|---:|---:|---:|")
        for n in (int(x) for x in a.sizes.split(",")):
            prompts = [a.prompt] * n
            m.generate_batch(prompts, params=p)  # sizes the context for this batch
            best = None
            for _ in range(a.reps):
                t0 = time.perf_counter()
                passes = list(m.denoise_batch(prompts, params=p))
                per = (time.perf_counter() - t0) / len(passes)
                fwd = sum(s[0].forward_s for s in passes) / len(passes)
                best = min(best or (per, fwd), (per, fwd))
            print(f"| {n} | {best[0] * 1e3:.1f} | {best[1] * 1e3:.1f} | {best[0] / n * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
