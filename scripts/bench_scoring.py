#!/usr/bin/env python3
"""Host work alone: dlm's greedy scoring of N logits rows (LLaDA-8B's vocabulary) per step.

Times ``scoring.greedy`` on random float32 logits [canvas, vocab] for several row counts and thread
counts: variant ``dlm`` (the C kernel when built), ``numpy`` (its numpy fallback, with chunk sizes),
``inplace`` (an older numpy variant), against the plain approach (gather the rows, then whole-array
passes). No model, no GPU: it isolates what dlm adds to each step.

  python3 scripts/bench_scoring.py --threads 1,4,8,16 --variants dlm,numpy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dlmcli.engine import scoring  # noqa: E402


def plain(rows: np.ndarray):
    """The naive way: copy the rows out, then argmax, subtract, exp, sum over whole arrays."""
    idx = np.argmax(rows, axis=1)
    top = rows[np.arange(rows.shape[0]), idx]
    e = np.exp(rows - top[:, None])
    return idx, 1.0 / e.sum(axis=1, dtype=np.float64)


def part_numpy(rows, a, b, want_margin, want_entropy, threads=1):
    """The numpy fallback (what runs without the C kernel); split over the Python pool."""
    return scoring._greedy_part_numpy(rows, a, b, want_margin, want_entropy)


def part_inplace(rows, a, b, want_margin, want_entropy, threads=1):
    """Variant: one row at a time, read where it lies (one numpy call per row and pass)."""
    vocab = rows.shape[1]
    buf = np.empty(vocab, np.float32)
    n = b - a
    idx, conf = np.empty(n, np.intp), np.empty(n)
    for j in range(n):
        r = rows.logits[rows.index[a + j]]
        i = r.argmax()
        np.subtract(r, r[i], out=buf)
        np.exp(buf, out=buf)
        idx[j] = i
        conf[j] = 1.0 / buf.sum(dtype=np.float64)
    return idx, conf, np.zeros(0), np.zeros(0)


def ops(vocab: int, threads: int, reps: int) -> list[dict]:
    """ns per element of each pass on a cache-resident 4-row buffer: 1 thread, then `threads`
    threads at once (each on its own buffer). A pass that holds the GIL shows no speed-up."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    src = rng.standard_normal((64, vocab), dtype=np.float32)
    bufs = [np.zeros((4, -(-vocab // 256) * 256), np.float32) for _ in range(threads)]
    for b in bufs:
        b[:, :vocab] = src[:4]
    rows_idx = np.arange(4) + 8
    passes = {
        "take 4 rows (np.take)": lambda b: np.take(src, rows_idx, axis=0, out=b[:, :vocab]),
        "argmax": lambda b: b.argmax(axis=1),
        "subtract": lambda b: np.subtract(b, np.float32(0.5), out=b),
        "exp": lambda b: np.exp(np.minimum(b, np.float32(1), out=b), out=b),
        "sum float32": lambda b: b.sum(axis=1),
        "sum 256-pieces + float64": lambda b: b.reshape(4, -1, 256).sum(axis=2).sum(axis=1, dtype=np.float64),
        "sum cast to float64": lambda b: b.sum(axis=1, dtype=np.float64),
    }
    pool = ThreadPoolExecutor(threads)
    out = []
    n_el = bufs[0].size
    for name, fn in passes.items():
        def loop(b, fn=fn):
            for _ in range(20):
                fn(b)
        one = med(lambda: loop(bufs[0]), reps)
        many = med(lambda: list(pool.map(loop, bufs)), reps)
        r = {"pass": name, "ns_per_el_1": one * 1e6 / (20 * n_el), "speedup": one * threads / many,
             "threads": threads}
        out.append(r)
        print(f"{name:28s} {r['ns_per_el_1']:6.3f} ns/element, {threads} threads at once: "
              f"{r['speedup']:5.1f}x the work of one", flush=True)
    pool.shutdown()
    return out


VARIANTS = {"dlm": scoring._greedy_part, "numpy": part_numpy, "inplace": part_inplace}


def med(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=126464)
    ap.add_argument("--canvas", type=int, default=288)
    ap.add_argument("--rows", default="32,128,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--chunks", default="2048", help="chunk sizes in KiB")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--variants", default="dlm", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--ops", type=int, default=0, help="also time each pass alone, with this many threads")
    ap.add_argument("--cases", default="",
                    help="instead: time every algorithm under these samplings, e.g. 't0,t0.2p0.95,t0.5,t0p0.95,t0.2k40p0.95'"
                         " (T, top-k, top-p) for each --vocab-list size, on --threads")
    ap.add_argument("--vocab-list", default="126464,152064", help="with --cases: vocabulary sizes (LLaDA-8B, Dream-7B)")
    ap.add_argument("--scale", type=float, default=3.0, help="standard deviation of the random logits")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.cases:
        return cases(args)
    print(f"variant dlm scores with: {scoring.kernel_name()}", flush=True)
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((args.canvas, args.vocab), dtype=np.float32) * 3)
    res = []
    if args.ops:
        res += ops(args.vocab, args.ops, args.reps)
    for n in map(int, args.rows.split(",")):
        # masked positions as the timestep schedule leaves them: scattered over the last 256
        idx = np.sort(rng.choice(np.arange(args.canvas - 256, args.canvas), n, replace=False))
        t_plain = med(lambda: plain(logits[idx]), args.reps)
        res.append({"rows": n, "impl": "plain", "threads": 1, "chunk_kib": 0, "ms": t_plain})
        print(f"rows {n:4d} plain    (1 thread)                {t_plain:8.2f} ms", flush=True)
        for var in args.variants.split(","):
            scoring._greedy_part = VARIANTS[var]
            os.environ["DLM_SCORING"] = "" if var == "dlm" else "numpy"
            for th in map(int, args.threads.split(",")):
                for ck in map(int, args.chunks.split(",")) if var == "numpy" else [0]:
                    scoring.CHUNK_BYTES = (ck or 2048) << 10
                    t = med(lambda: scoring.greedy(scoring.Rows(logits, idx), "low-confidence", th),
                            args.reps)
                    res.append({"rows": n, "impl": var, "threads": th, "chunk_kib": ck, "ms": t})
                    print(f"rows {n:4d} {var:8s} threads {th:2d} chunk {ck:5d} KiB {t:8.2f} ms", flush=True)
        scoring._greedy_part = VARIANTS["dlm"]
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


def parse_case(text: str) -> tuple[float, int, float]:
    m = re.fullmatch(r"t([\d.]+)(?:k(\d+))?(?:p([\d.]+))?", text)
    if not m:
        raise SystemExit(f"bad case {text!r}: write t<temperature>[k<top-k>][p<top-p>]")
    return float(m.group(1)), int(m.group(2) or 0), float(m.group(3) or 1.0)


def cases(args) -> None:
    """ms per step for scoring.sample on n masked rows, per vocabulary, algorithm and sampling (both
    conventions where they differ), after the rows were written once (as llama.cpp leaves them)."""
    res = []
    print(f"scoring with: {scoring.kernel_name()}", flush=True)
    for vocab in map(int, args.vocab_list.split(",")):
        rng = np.random.default_rng(0)
        logits = (rng.standard_normal((args.canvas, vocab), dtype=np.float32) * args.scale)
        for n in map(int, args.rows.split(",")):
            for shifted in (False, True):  # Dream reads row i-1 for position i
                idx = np.arange(args.canvas - n, args.canvas) - (1 if shifted else 0)
                for case in args.cases.split(","):
                    t, k, p = parse_case(case)
                    for conv in ("sampled", "raw") if (t > 0 or k or p < 1) else ("sampled",):
                        for alg in ("low-confidence", "margin", "entropy"):
                            for th in map(int, args.threads.split(",")):
                                g = np.random.default_rng(1)
                                ms = med(lambda: scoring.sample(scoring.Rows(logits, idx), alg, t, k, p, conv, g, th),
                                         args.reps)
                                row = {"vocab": vocab, "rows": n, "shifted": shifted, "case": case, "convention": conv,
                                       "algorithm": alg, "threads": th, "ms": ms}
                                res.append(row)
                                print(" ".join(f"{k}={v}" for k, v in row.items() if k != "ms") + f"  {ms:8.2f} ms",
                                      flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
