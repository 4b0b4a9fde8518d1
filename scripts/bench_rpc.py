#!/usr/bin/env python3
"""Cost of spreading a model over llama.cpp RPC hosts: local vs one vs two rpc-servers, side by side.

Starts two ``dlm rpc-server`` processes on free loopback ports (or uses --rpc A,B for real hosts),
loads the same model three (or four) times in this process and runs the same greedy generation on
each, alternating between them rep by rep, so every configuration sees the same machine load. Per
forward pass it reports the wall time, its forward part, the host part, and the bytes that crossed
the network (read from the kernel's TCP counters of dlm's connections to the hosts: Linux only).

  python3 scripts/bench_rpc.py -m build/bench/models/llada8b-shape-Q4_K_M.gguf --out docs/bench/rpc-cpu.json

Configurations: ``local`` (no RPC); ``1 host`` (every layer on host A); ``2 hosts`` (layers split
between A and B by their free memory, llama.cpp's default). The input embeddings stay on this machine
(llama.cpp never offloads them) and the output layer goes to the last host.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmcli.api import Model  # noqa: E402  (after the sys.path insert)
from dlmcli.runtime import rpc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(n: int, threads: int) -> tuple[list[subprocess.Popen], list[str]]:
    procs, eps = [], []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "dlmcli", "rpc-server", "--port", str(port),
                                       "--threads", str(threads)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        eps.append(f"127.0.0.1:{port}")
    for ep in eps:
        host, port = ep.split(":")
        for _ in range(600):
            try:
                rpc.probe(rpc.Endpoint(host, int(port)), timeout=2)
                break
            except rpc.RpcError:
                time.sleep(0.1)
    return procs, eps


def tcp_bytes(endpoints: list[str]) -> tuple[int, int]:
    """Bytes sent (acked) and received on this process's TCP connections to ENDPOINTS (Linux)."""
    want = set()
    for ep in endpoints:
        host, port = ep.rsplit(":", 1)
        want.add((socket.gethostbyname(host), int(port)))
    sent = received = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if s.type == socket.SOCK_STREAM and s.family == socket.AF_INET and s.getpeername() in want:
                info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
                a, r = struct.unpack_from("<QQ", info, 120)  # tcpi_bytes_acked, tcpi_bytes_received
                sent += a
                received += r
        except OSError:
            pass
        finally:
            s.close()
    return sent, received


def run(m: Model, args, endpoints: list[str]) -> dict:
    params = m.params(gen_length=args.gen_length, steps=args.steps, block_length=args.gen_length,
                      temperature=0.0, early_stop=False, seed=0)
    b0 = tcp_bytes(endpoints) if endpoints else (0, 0)
    t0 = time.perf_counter()
    gen = m.denoise("Explain why the sky is blue. " * (args.prompt_len // 7), raw=True, params=params)
    fwd = 0.0
    for step in gen:
        fwd += step.forward_s
    wall = time.perf_counter() - t0
    res = gen.result()
    b1 = tcp_bytes(endpoints) if endpoints else (0, 0)
    n = res.steps
    return {"pass_ms": wall / n * 1e3, "forward_ms": fwd / n * 1e3, "host_ms": (wall - fwd) / n * 1e3,
            "sent_kib_per_pass": (b1[0] - b0[0]) / n / 1024, "recv_kib_per_pass": (b1[1] - b0[1]) / n / 1024,
            "tokens": res.tokens, "positions": len(res.prompt_tokens) + args.gen_length}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--rpc", help="two real hosts A,B instead of loopback servers started here")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads, here and in each server")
    ap.add_argument("--out")
    args = ap.parse_args()

    procs: list[subprocess.Popen] = []
    try:
        if args.rpc:
            eps = args.rpc.split(",")
        else:
            procs, eps = start_servers(2, args.threads)
        models = {"local": Model(args.model, n_threads=args.threads)}
        models["1 host"] = Model(args.model, n_threads=args.threads, rpc=eps[0])
        models["2 hosts"] = Model(args.model, n_threads=args.threads, rpc=eps)
        uses = {"local": [], "1 host": eps[:1], "2 hosts": eps}
        for name, m in models.items():
            print(f"{name}: " + "; ".join(m.placement.lines() if m.placement else ["?"]), file=sys.stderr)
            run(m, args, uses[name])  # warm-up (first-pass allocations, weights paged in)
        samples: dict[str, list[dict]] = {k: [] for k in models}
        for _ in range(args.reps):
            for name, m in models.items():
                samples[name].append(run(m, args, uses[name]))
        rows = []
        ref = samples["local"][0]["tokens"]
        print(f"{'configuration':24} {'pass ms':>9} {'forward':>9} {'host':>7} {'sent KiB':>9} {'recv KiB':>9}  same tokens")
        for name, runs in samples.items():
            med = {k: statistics.median(r[k] for r in runs) for k in
                   ("pass_ms", "forward_ms", "host_ms", "sent_kib_per_pass", "recv_kib_per_pass")}
            same = all(r["tokens"] == ref for r in runs)
            rows.append({"configuration": name, **{k: round(v, 2) for k, v in med.items()}, "same_tokens": same,
                         "passes_ms": [round(r["pass_ms"], 2) for r in runs]})
            print(f"{name:24} {med['pass_ms']:9.1f} {med['forward_ms']:9.1f} {med['host_ms']:7.1f} "
                  f"{med['sent_kib_per_pass']:9.1f} {med['recv_kib_per_pass']:9.1f}  {same}")
        for m in models.values():
            m.close()
        if args.out:
            Path(args.out).write_text(json.dumps({
                "model": args.model, "positions": samples["local"][0]["positions"], "steps": args.steps,
                "threads": args.threads, "reps": args.reps, "hosts": "loopback" if not args.rpc else args.rpc,
                "rows": rows}, indent=2) + "\n")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
