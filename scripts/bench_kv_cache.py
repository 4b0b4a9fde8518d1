"""The prefix cache (--cache prefix) against no cache, side by side in one run: accuracy and speed.

    PYTHONPATH=. python scripts/bench_kv_cache.py accuracy --n 200 --json docs/bench/kv-cache-accuracy.json
    PYTHONPATH=. python scripts/bench_kv_cache.py speed --prompts 32 512 --json docs/bench/kv-cache-cpu.json
    PYTHONPATH=. python scripts/bench_kv_cache.py passes --prompts 32 512 --threads 1 --reps 3 --json docs/bench/kv-cache-passes-cpu.json

accuracy: the bundled tiny models on fresh random `reverse WORD` and `add A B` prompts (as
scripts/eval_tiny_dlm.py), each prompt run with the cache off and on, with and without --threshold 0.9
(with -a low-confidence: tiny-dream's default entropy scores are no confidences).
Both runs use the block schedule (the cache needs blocks; tiny-dream's default is the timestep
schedule, so its "off" column here is block-wise too) and otherwise the model's defaults; seed i for
prompt i on both sides. "agree" counts prompts whose answer is the same with and without the cache.

speed: a random LLaDA of the CPU anchor's shape (4 layers, d 512, vocab 32,280: 46.7M parameters;
docs/performance.md), prompts of the given lengths, --gen-length 256 --block-length 32, --steps 256
(32 per block). Runs alternate off / prefix; per-step forward times come from the engine's Step
events, split into full passes and partial (window + suffix) passes for the cache.

passes: the same model and canvas shapes, forward passes alone (a whole generation of 256 steps
takes minutes on a loaded 2-core machine): per prompt length, the no-cache pass, the cache's full
pass and its partial pass at each of the 8 blocks, interleaved, medians over --reps. The per-step
figure for the cache is then (full + (S-1) x partial) / S averaged over the blocks, S = steps per block.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


from eval_tiny_dlm import draw  # noqa: E402  (the same prompts as the tiny-model eval)


def accuracy(args) -> dict:
    import dlmcli

    out = {}
    for name in args.models:
        with dlmcli.load(name, n_threads=args.threads) as off, \
                dlmcli.load(name, n_threads=args.threads, cache="prefix") as on:
            for kind in ("reverse", "add"):
                rng = random.Random(f"{args.seed}:{kind}")
                prompts = [draw(rng, kind) for _ in range(args.n)]
                for thr in (None, 0.9):
                    row = {"off": 0, "prefix": 0, "agree": 0, "passes_off": 0, "passes_prefix": 0,
                           "forward_s_off": 0.0, "forward_s_prefix": 0.0}
                    for i, (q, want) in enumerate(prompts):
                        kw = dict(seed=i, schedule="block", threshold=thr)
                        if thr is not None:  # a threshold compares confidences: not entropy's scores
                            kw["algorithm"] = "low-confidence"
                        a = off.generate(q, **kw)
                        b = on.generate(q, **kw)
                        row["off"] += a.text == want
                        row["prefix"] += b.text == want
                        row["agree"] += a.text == b.text
                        row["passes_off"] += a.steps
                        row["passes_prefix"] += b.steps
                        row["forward_s_off"] += a.timings.forward_s
                        row["forward_s_prefix"] += b.timings.forward_s
                    key = f"{name}/{kind}/threshold={thr}"
                    out[key] = row
                    print(f"{key:40s} off {row['off'] / args.n:.3f}  prefix {row['prefix'] / args.n:.3f}  "
                          f"agree {row['agree'] / args.n:.3f}  forward {row['forward_s_off']:.2f}s vs "
                          f"{row['forward_s_prefix']:.2f}s", flush=True)
    return {"n": args.n, "seed": args.seed, "results": out}


def speed(args) -> dict:
    from dlmcli.api import Model
    from tools.ggufgen import write_random_gguf

    tmp = Path(tempfile.mkdtemp(prefix="dlm-kvbench-"))
    path = tmp / "bench-small.gguf"
    write_random_gguf(path, "llada", seed=0, n_layer=4, n_embd=512, n_head=8, n_ff=1536, n_vocab=32280,
                      context_length=4096, chat_template=None)
    rng = random.Random(0)
    res = {}
    with Model(path, n_threads=args.threads) as off, Model(path, n_threads=args.threads, cache="prefix") as on:
        print(f"model: {off.runtime.model.n_params / 1e6:.1f}M parameters, {args.threads} threads", flush=True)
        for plen in args.prompts:
            toks = [1] + [rng.randrange(8, 100) for _ in range(plen - 1)]
            runs = {"off": [], "prefix": []}
            for rep in range(args.reps):
                for mode, m in (("off", off), ("prefix", on)):
                    pre = m.runtime.prefix
                    f0 = pre.full_passes if pre else 0
                    t0 = time.perf_counter()
                    steps = list(m.denoise(prompt_tokens=toks, gen_length=args.gen_length, steps=args.steps,
                                           block_length=args.block_length, schedule="block", seed=rep,
                                           early_stop=False))
                    wall = time.perf_counter() - t0
                    fw = [s.forward_s for s in steps]
                    # Full passes are a block's first step; the rest are partial.
                    per_block = args.steps // (args.gen_length // args.block_length)
                    first = [f for i, f in enumerate(fw) if i % per_block == 0]
                    rest = [f for i, f in enumerate(fw) if i % per_block != 0]
                    runs[mode].append({"steps": len(fw), "wall_s": wall, "forward_s": sum(fw),
                                       "step_ms": 1000 * statistics.mean(fw),
                                       "block_start_ms": 1000 * statistics.median(first),
                                       "other_step_ms": 1000 * statistics.median(rest) if rest else None,
                                       "full_passes": (pre.full_passes - f0) if pre else len(fw)})
                    r = runs[mode][-1]
                    print(f"prompt {plen:5d} {mode:6s} rep {rep}: {r['steps']} steps, {r['step_ms']:.1f} ms/step "
                          f"(block start {r['block_start_ms']:.1f}, other {r['other_step_ms']:.1f}), "
                          f"{r['wall_s']:.1f} s", flush=True)
            best = {k: min(v, key=lambda r: r["forward_s"]) for k, v in runs.items()}
            res[str(plen)] = {"runs": runs, "speedup_forward": best["off"]["forward_s"] / best["prefix"]["forward_s"],
                              "speedup_wall": best["off"]["wall_s"] / best["prefix"]["wall_s"]}
            print(f"prompt {plen}: forward {res[str(plen)]['speedup_forward']:.2f}x, "
                  f"wall {res[str(plen)]['speedup_wall']:.2f}x (fastest runs)", flush=True)
    path.unlink()
    tmp.rmdir()
    return {"gen_length": args.gen_length, "block_length": args.block_length, "steps": args.steps,
            "threads": args.threads, "results": res}


def passes(args) -> dict:
    """Forward passes alone, interleaved: the no-cache pass, the cache's full pass (a block start)
    and its partial pass at each block of the answer (window + suffix)."""
    import numpy as np

    from tools.ggufgen import CharVocab
    from dlmcli.runtime.llama import Runtime

    tmp = Path(tempfile.mkdtemp(prefix="dlm-kvbench-"))
    path = tmp / "bench-small.gguf"
    from tools.ggufgen import write_random_gguf

    write_random_gguf(path, "llada", seed=0, n_layer=4, n_embd=512, n_head=8, n_ff=1536, n_vocab=32280,
                      context_length=4096, chat_template=None)
    res = {}
    mask = CharVocab().mask_id
    with Runtime(path, n_threads=args.threads) as off, Runtime(path, n_threads=args.threads, cache="prefix") as on:
        print(f"model: {off.model.n_params / 1e6:.1f}M parameters, threads {args.threads or 'dlm default'}",
              flush=True)
        for plen in args.prompts:
            rng = np.random.default_rng(plen)
            canvas = np.concatenate([rng.integers(8, 100, plen), np.full(args.gen_length, mask)]).astype(np.int32)
            n, bl = len(canvas), args.block_length
            t = {"off": [], "full": [], "partial": {}}
            for _rep in range(args.reps):
                t0 = time.perf_counter()
                off.forward([canvas])
                t["off"].append(time.perf_counter() - t0)
                for k in range(args.gen_length // bl):
                    w = (plen + k * bl, plen + (k + 1) * bl)
                    on.prefix.clear()  # as at a block start: a full pass
                    t0 = time.perf_counter()
                    on.forward([canvas], [w])
                    t["full"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    on.forward([canvas], [w])
                    t["partial"].setdefault(k, []).append(time.perf_counter() - t0)
            med = statistics.median
            off_ms, full_ms = 1000 * med(t["off"]), 1000 * med(t["full"])
            part_ms = [1000 * med(v) for _, v in sorted(t["partial"].items())]
            per_block = args.steps // (args.gen_length // bl)
            step_ms = statistics.mean((full_ms + (per_block - 1) * p) / per_block for p in part_ms)
            res[str(plen)] = {"tokens": n, "off_ms": off_ms, "full_ms": full_ms, "partial_ms_by_block": part_ms,
                              "steps_per_block": per_block, "cached_step_ms": step_ms,
                              "speedup": off_ms / step_ms, "runs": t}
            print(f"prompt {plen:5d} ({n} tokens): no cache {off_ms:.1f} ms/pass; cache: full {full_ms:.1f} ms, "
                  f"partial {part_ms[0]:.1f} (block 0) .. {part_ms[-1]:.1f} (last block) ms; "
                  f"{per_block} steps/block -> {step_ms:.1f} ms/step, {off_ms / step_ms:.2f}x", flush=True)
    path.unlink()
    tmp.rmdir()
    return {"gen_length": args.gen_length, "block_length": args.block_length, "steps": args.steps,
            "threads": args.threads, "reps": args.reps, "results": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["accuracy", "speed", "passes"])
    ap.add_argument("--models", nargs="+", default=["tiny-llada", "tiny-dream"])
    ap.add_argument("--n", type=int, default=200, help="accuracy: prompts per task")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--prompts", nargs="+", type=int, default=[32, 512], help="speed: prompt lengths")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: dlm's (1 for models under 50M)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    out = {"accuracy": accuracy, "speed": speed, "passes": passes}[args.what](args)
    out["command"] = " ".join(sys.argv)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
