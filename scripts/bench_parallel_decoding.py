#!/usr/bin/env python3
"""Forward passes against accuracy: threshold/factor parallel decoding and EOS early stop.

Runs the bundled tiny models on fresh `reverse WORD` and `add A B` prompts (chat template, greedy,
the models' own gen_length/steps/block_length) under several settings and prints, per model and
setting, exact-match accuracy and forward passes per answer. The baseline is the fixed schedule
(steps = gen_length, one token per pass) without early stop.

  python3 scripts/bench_parallel_decoding.py --n 250 --out docs/bench/parallel.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmcli.api import load  # noqa: E402  (after the sys.path insert)
from dlmcli.errors import UsageError  # noqa: E402

import numpy as np  # noqa: E402

SETTINGS = [  # (label, overrides)
    ("fixed schedule", dict(early_stop=False)),
    ("early stop", dict(early_stop=True)),
    *[(f"threshold {t}", dict(threshold=t, early_stop=True)) for t in (0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3)],
    *[(f"factor {f}", dict(factor=f, early_stop=True)) for f in (0.5, 1.0, 2.0)],
    ("threshold 0.9, no early stop", dict(threshold=0.9, early_stop=False)),
]


def tasks(n: int, seed: int) -> list[tuple[str, str]]:
    """n prompts per task: (prompt, expected answer)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = "".join(chr(97 + c) for c in rng.integers(0, 26, int(rng.integers(3, 13))))
        out.append((f"reverse {w}", w[::-1]))
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(0, 1000, 2))
        out.append((f"add {a} {b}", str(a + b)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny-llada,tiny-dream")
    ap.add_argument("--n", type=int, default=250, help="prompts per task")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--gen-length", type=int, help="override the model's own (its steps follow)")
    ap.add_argument("--algorithm", help="override the model family's remasking algorithm, e.g. low-confidence "
                    "(thresholds compare probabilities; Dream's default 'entropy' scores are <= 0)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out")
    args = ap.parse_args()
    items = tasks(args.n, args.seed)
    rows = []
    for name in args.models.split(","):
        with load(name, n_threads=args.threads) as m:
            for label, ov in SETTINGS:
                try:
                    params = m.params(temperature=0.0, top_k=0, top_p=1.0, seed=0, gen_length=args.gen_length,
                                      algorithm=args.algorithm, **ov)
                except UsageError as e:  # --threshold with entropy/origin scores: dlm refuses it
                    print(f"{name:11s} {label:30s} refused: {e}", file=sys.stderr, flush=True)
                    continue
                t0 = time.perf_counter()
                results = []
                for i in range(0, len(items), args.batch_size):
                    group = [p for p, _ in items[i:i + args.batch_size]]
                    results += m.generate_batch(group, params=params, first_index=i)
                wall = time.perf_counter() - t0
                ok = [r.text.strip() == want for r, (_, want) in zip(results, items)]
                passes = [r.steps for r in results]
                half = len(items) // 2
                row = {"model": name, "setting": label, "schedule": params.schedule, "algorithm": params.algorithm,
                       "steps": params.steps,
                       "gen_length": params.gen_length, "block_length": params.block_length,
                       "accuracy": float(np.mean(ok)), "acc_reverse": float(np.mean(ok[:half])),
                       "acc_add": float(np.mean(ok[half:])), "passes": float(np.mean(passes)),
                       "wall_s": wall}
                rows.append(row)
                print(f"{name:11s} {label:30s} acc {row['accuracy']:.3f} (reverse {row['acc_reverse']:.3f}, "
                      f"add {row['acc_add']:.3f})  passes/answer {row['passes']:5.2f}", file=sys.stderr, flush=True)
    print("| model | algorithm | setting | accuracy | reverse | add | passes per answer | fewer passes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["setting"] == "fixed schedule")
        print(f"| {Path(r['model']).stem} | {r['algorithm']} | {r['setting']} | {r['accuracy']:.1%} | {r['acc_reverse']:.1%} | {r['acc_add']:.1%} | "
              f"{r['passes']:.2f} | {base['passes'] / r['passes']:.2f}x |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
