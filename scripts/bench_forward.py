#!/usr/bin/env python3
"""The forward pass alone, under the settings dlm controls: which weights file, flash attention,
micro-batch size. One diffusion pass = one llama_decode of the whole canvas (all logits out).

  python3 scripts/bench_forward.py -m a-f16.gguf -m a-q8_0.gguf -m a-q4_k_m.gguf --ngl 999 --canvas 288

Prints the median ms per pass of each (model, flash attention, n_ubatch) and writes JSON with --out.
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

from dlmcli.runtime import native  # noqa: E402  (after the sys.path insert)
from dlmcli.runtime.llama import LlamaBatch, LlamaModel  # noqa: E402
from dlmcli.runtime.native import lib  # noqa: E402

import numpy as np  # noqa: E402

FLASH = {"auto": -1, "off": 0, "on": 1}


def time_model(path: str, args) -> list[dict]:
    model = LlamaModel(Path(path), args.ngl)
    out = []
    try:
        canvas = np.random.default_rng(0).integers(0, model.n_vocab, args.canvas).astype(np.int32)
        for fa in args.flash.split(","):
            for ub in map(int, args.ubatch.split(",")):
                ub = max(ub, args.canvas)  # non-causal attention: the canvas must fit one micro-batch
                params = lib.llama_context_default_params()
                params.n_ctx = params.n_batch = max(ub, args.canvas)
                params.n_ubatch = ub
                params.n_seq_max = 1
                params.no_perf = True
                params.n_threads = params.n_threads_batch = args.threads
                params.flash_attn_type = FLASH[fa]
                ctx = lib.llama_init_from_model(model.ptr, params)
                if not ctx:
                    print(f"{path}: no context for flash {fa}, ubatch {ub}", flush=True)
                    continue
                lib.llama_set_causal_attn(ctx, False)
                batch = LlamaBatch(args.canvas, 1)
                batch.fill([canvas])
                ts = []
                for i in range(args.warmup + args.reps):
                    t0 = time.perf_counter()
                    rc = lib.llama_decode(ctx, batch.batch)
                    lib.llama_get_logits(ctx)  # waits for the logits, as dlm's forward does
                    if rc != 0:
                        raise SystemExit(f"llama_decode returned {rc}")
                    if i >= args.warmup:
                        ts.append(time.perf_counter() - t0)
                batch.close()
                lib.llama_free(ctx)
                row = {"model": Path(path).name, "flash_attn": fa, "n_ubatch": ub, "canvas": args.canvas,
                       "ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3, "reps": len(ts)}
                out.append(row)
                print(f"{row['model']:40s} flash {fa:4s} ubatch {ub:5d}  {row['ms']:8.2f} ms (min {row['min_ms']:.2f})",
                      flush=True)
    finally:
        model.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", action="append", required=True)
    ap.add_argument("--ngl", type=int, default=999)
    ap.add_argument("--canvas", type=int, default=288)
    ap.add_argument("--flash", default="auto,on,off")
    ap.add_argument("--ubatch", default="0", help="micro-batch sizes (raised to the canvas)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    native.init(False)
    res = []
    for m in args.model:
        res += time_model(m, args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
