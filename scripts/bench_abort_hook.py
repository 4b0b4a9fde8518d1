#!/usr/bin/env python3
"""The abort callback's cost per step: the C hook (dlmcli/runtime/_abort.c) against the Python
callback it replaced, on one loaded model, interleaved in one process (llama.cpp's CPU backend calls
the callback after every graph node; the tiny models' passes are a few ms, so it shows there).

  python3 scripts/bench_abort_hook.py -m build/bench/models/tiny-dream-identity.gguf --rounds 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmcli import api  # noqa: E402
from dlmcli.runtime import native  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="tiny-dream")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds of each side")
    ap.add_argument("--per-round", type=int, default=4, help="generations per side per round")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if native._abort is None:
        raise SystemExit("the C hook is not built (pip install -e . builds it)")
    m = api.load(args.model)
    kw = dict(gen_length=16, steps=16, temperature=0.0, algorithm="entropy", schedule="timestep", early_stop=False,
              seed=0)
    prompt = "0123456789abcdef"
    m.generate(prompt, **kw)  # makes the context
    ctx = m.runtime.ctx
    per_step: dict[str, list[float]] = {"c": [], "python": []}
    for _ in range(args.rounds):
        for side in per_step:
            native._C_HOOK = side == "c"
            ctx._abort_hook = native.set_abort_callback(ctx.ptr, ctx.abort_flag)
            total = steps = 0
            for _ in range(args.per_round):
                r = m.generate(prompt, **kw)
                total += r.timings.total_s
                steps += r.steps
            per_step[side].append(total / steps * 1e3)
    native._C_HOOK = True
    diff = [p - c for c, p in zip(per_step["c"], per_step["python"])]
    res = {"model": args.model, "rounds": args.rounds, "per_round": args.per_round,
           "median_ms": {k: statistics.median(v) for k, v in per_step.items()},
           "min_ms": {k: min(v) for k, v in per_step.items()},
           "paired_python_minus_c_ms": {"median": statistics.median(diff), "mean": statistics.fmean(diff)}}
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps({**res, "per_step_ms": per_step}, indent=1))


if __name__ == "__main__":
    main()
