"""Load generator for `dlm serve`: throughput and latency against concurrency, passes shared or not.

For each concurrency C, C clients each send R streamed chat requests back to back; every request
records its time to the first answer text and to its last byte. The same run is made against a
server with --max-batch 1 (every request alone in its passes, the rest queue) and one with
--max-batch B (requests share passes), side by side, and printed as a Markdown table.

    python scripts/serve_load.py -m tiny-llada --concurrency 1,2,4,8,16,32 --requests 4
    python scripts/serve_load.py --url http://127.0.0.1:8000 -m tiny-llada   # an already running server
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def start_server(model: str, max_batch: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "serve", "-m", model, "--port", "0", "--max-batch",
                             str(max_batch), "--max-queue", "4096", *extra], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env)
    for line in iter(proc.stderr.readline, b""):
        m = re.search(r"on http://(\S+) ", line.decode())
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, "http://" + m.group(1)
    raise SystemExit("the server did not start")


def one_request(url: str, body: dict) -> tuple[float, float, int]:
    """(seconds to first text, seconds to the end, completion tokens) of one streamed request."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first, usage = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        obj = json.loads(line[6:])
        if obj.get("usage"):
            usage = obj["usage"]["completion_tokens"]
        for ch in obj.get("choices", []):
            if first is None and ch.get("delta", {}).get("content"):
                first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    conn.close()
    return (first if first is not None else end), end, usage


def run_level(url: str, body: dict, clients: int, requests: int) -> dict:
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def client():
        for _ in range(requests):
            r = one_request(url, body)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ends = sorted(r[1] for r in results)
    return {"clients": clients, "requests": len(results), "wall_s": wall, "req_per_s": len(results) / wall,
            "tok_per_s": sum(r[2] for r in results) / wall, "p50_s": statistics.median(ends),
            "p95_s": ends[min(len(ends) - 1, int(0.95 * len(ends)))],
            "first_text_p50_s": statistics.median(r[0] for r in results)}


def passes_histogram(url: str) -> str:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    count = float(re.search(r"^dlm_pass_sequences_count (\S+)", text, re.M).group(1))
    total = float(re.search(r"^dlm_pass_sequences_sum (\S+)", text, re.M).group(1))
    return f"{int(count)} passes, {total / max(count, 1):.1f} sequences per pass on average"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="tiny-llada")
    ap.add_argument("--url", help="use this running server instead of starting two")
    ap.add_argument("--concurrency", default="1,2,4,8,16,32")
    ap.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    ap.add_argument("--prompt", default="reverse hello")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--max-batch", type=int, default=32, help="--max-batch of the sharing server")
    ap.add_argument("--threads", type=int, default=None, help="--threads of the servers")
    ap.add_argument("--server-args", default="", help="more `dlm serve` flags for both servers, e.g. '--ngl -1'")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    body = {"model": Path(a.model).stem if a.model.endswith(".gguf") else a.model,
            "messages": [{"role": "user", "content": a.prompt}], "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if a.max_tokens:
        body["max_tokens"] = a.max_tokens
    if a.steps:
        body["steps"] = a.steps
    extra = (["--threads", str(a.threads)] if a.threads else []) + shlex.split(a.server_args)
    sides = [("given", a.url)] if a.url else [("alone (--max-batch 1)", 1), (f"shared (--max-batch {a.max_batch})",
                                                                              a.max_batch)]
    table = {}
    for name, target in sides:
        proc = None
        url = target if isinstance(target, str) else None
        if url is None:
            proc, url = start_server(a.model, target, extra)
        try:
            one_request(url, body)  # warm-up: the context is sized on first use
            rows = []
            for c in levels:
                r = run_level(url, body, c, a.requests)
                rows.append(r)
                print(f"{name:>24}  C={c:>2}  {r['req_per_s']:7.2f} req/s  {r['tok_per_s']:8.1f} tok/s  "
                      f"p50 {r['p50_s']:.3f}s  p95 {r['p95_s']:.3f}s  first text p50 {r['first_text_p50_s']:.3f}s",
                      file=sys.stderr, flush=True)
            print(f"{name}: {passes_histogram(url)}", file=sys.stderr)
            table[name] = rows
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(60)
    print(f"\nmodel {a.model}, server flags {' '.join(extra) or '(defaults)'}, prompt {a.prompt!r}, {a.requests} requests per client, body {json.dumps(body)}\n")
    print("| clients | " + " | ".join(f"{n}: req/s, tok/s, p50 s, p95 s" for n in table) + " |")
    print("|---:|" + "---|" * len(table))
    for i, c in enumerate(levels):
        cells = [f"{rows[i]['req_per_s']:.2f}, {rows[i]['tok_per_s']:.1f}, {rows[i]['p50_s']:.3f}, "
                 f"{rows[i]['p95_s']:.3f}" for rows in table.values()]
        print(f"| {c} | " + " | ".join(cells) + " |")
    if a.json:
        a.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
