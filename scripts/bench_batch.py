#!/usr/bin/env python3
"""Throughput against batch size: B prompts share every forward pass (`dlm generate --batch`).

For each batch size B it runs B prompts of the same length through ``Model.generate_batch``
(timestep schedule, greedy, no early stop, so every sequence takes every pass) and reports the
wall time per pass, its forward and host parts, and generated tokens per second (B * gen_length /
wall time). With --cfg it also runs one prompt with classifier-free guidance, whose conditional and
unconditional sequences share one two-sequence pass.

  python3 scripts/bench_batch.py -m build/bench/models/llada8b-shape-Q4_K_M.gguf --ngl 999 \\
      --sizes 1,2,4,8 --cfg --out docs/bench/batch-h100.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmcli.api import Model  # noqa: E402  (after the sys.path insert)


def one(m: Model, B: int, args, cfg: float = 0.0) -> dict:
    prompts = [(chr(ord("a") + i % 26) + " reverse the words of this sentence please " * 20)[: args.prompt_len - 1]
               for i in range(B)]
    params = m.params(gen_length=args.gen_length, steps=args.steps, schedule="timestep", temperature=0.0,
                      top_k=0, top_p=1.0, algorithm="low-confidence", early_stop=False, cfg=cfg, seed=0)
    t0 = time.perf_counter()
    gen = m.denoise_batch(prompts, raw=True, params=params)
    fwd = host = 0.0
    passes = 0
    for steps in gen:
        passes += 1
        fwd += steps[0].forward_s
    wall = time.perf_counter() - t0
    host = wall - fwd
    return {"batch": B, "cfg": cfg, "passes": passes, "wall_s": wall, "pass_ms": wall / passes * 1e3,
            "forward_ms": fwd / passes * 1e3, "host_ms": host / passes * 1e3,
            "tok_s": B * args.gen_length / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--sizes", default="1,2,4,8")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cfg", action="store_true")
    ap.add_argument("--ngl", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out")
    args = ap.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    with Model(Path(args.model), n_gpu_layers=args.ngl, n_threads=args.threads) as m:
        m.runtime.reserve(max(sizes) * (args.prompt_len + args.gen_length), max(sizes))  # one context for all
        one(m, 1, argparse.Namespace(**{**vars(args), "steps": 2}))  # warm-up
        runs = []
        cases = [(B, 0.0) for B in sizes] + ([(1, 1.0)] if args.cfg else [])
        for rep in range(args.reps):
            for B, cfg in cases:
                r = one(m, B, args, cfg)
                r["rep"] = rep
                runs.append(r)
                print(f"B={B} cfg={cfg}: {r['pass_ms']:.1f} ms/pass (forward {r['forward_ms']:.1f}, host "
                      f"{r['host_ms']:.1f}), {r['tok_s']:.0f} tok/s", file=sys.stderr, flush=True)
    rows = []
    for B, cfg in cases:
        rs = [r for r in runs if r["batch"] == B and r["cfg"] == cfg]
        rows.append({"batch": B, "cfg": cfg, **{k: statistics.median(r[k] for r in rs)
                                                 for k in ("pass_ms", "forward_ms", "host_ms", "tok_s")}})
    base = rows[0]["tok_s"]
    print("| batch | CFG | per pass (ms) | forward (ms) | host (ms) | tokens/s | vs batch 1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {'yes' if r['cfg'] else 'no'} | {r['pass_ms']:.1f} | {r['forward_ms']:.1f} | "
              f"{r['host_ms']:.1f} | {r['tok_s']:.0f} | {r['tok_s'] / base:.2f}x |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": rows}, indent=1))


if __name__ == "__main__":
    main()
