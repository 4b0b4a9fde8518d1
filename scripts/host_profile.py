#!/usr/bin/env python3
"""Where a step's host time goes: per pass, dlm's sampling time (Step.sampling_s) against the time
spent inside the C kernel's calls, for one model and a few samplings. In-process, through the API.

  python3 scripts/host_profile.py -m MODEL.gguf --gen-length 256 --steps 16 --cases t0:entropy,t0.2p0.95:entropy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmcli import api  # noqa: E402
from dlmcli.engine import scoring  # noqa: E402


class Timed:
    """The kernel module with each call timed."""

    def __init__(self, mod):
        self._mod, self.seconds, self.calls = mod, 0.0, 0

    def __getattr__(self, name):
        fn = getattr(self._mod, name)
        if not callable(fn):
            return fn

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
        return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cases", default="t0:low-confidence,t0:entropy,t0.2p0.95:entropy",
                    help="comma list of t<T>[p<top-p>]:<algorithm>")
    ap.add_argument("--out")
    args = ap.parse_args()
    timed = Timed(scoring._rowscore)
    scoring._rowscore = timed
    res = []
    with api.load(args.model, n_gpu_layers=args.ngl, n_threads=args.threads) as m:
        prompt = list(range(100, 100 + args.prompt_len))
        for case in args.cases.split(","):
            smp, alg = case.split(":")
            t, _, p = smp[1:].partition("p")
            for rep in range(2):  # the first also warms up
                timed.seconds, timed.calls = 0.0, 0
                t0 = time.perf_counter()
                steps = list(m.denoise(prompt_tokens=prompt, gen_length=args.gen_length, steps=args.steps,
                                       temperature=float(t), top_p=float(p or 1), top_k=0, algorithm=alg,
                                       early_stop=False, seed=0))
                wall = time.perf_counter() - t0
                n = len(steps)
                row = {"case": case, "rep": rep, "passes": n, "wall_ms": wall * 1e3 / n,
                       "forward_ms": sum(s.forward_s for s in steps) * 1e3 / n,
                       "sampling_ms": sum(s.sampling_s for s in steps) * 1e3 / n,
                       "kernel_ms": timed.seconds * 1e3 / n, "kernel_calls": timed.calls}
                res.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
