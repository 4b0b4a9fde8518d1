#!/usr/bin/env python3
"""docs/performance.png from the benchmark JSON files in docs/bench/ (needs matplotlib).

  python3 scripts/plot_performance.py docs/bench/cpu.json docs/bench/h100.json \\
      --batch docs/bench/batch-h100.json --out docs/performance.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def side_by_side(ax, path: Path, title: str) -> None:
    data = json.loads(path.read_text())
    labels, fwd, host = [], [], []
    names = {"llama.cpp": "llama.cpp\ntop-k 0", "llama.cpp top-k 40": "llama.cpp\ntop-k 40", "dlm": "dlm",
             "dlm numpy scoring": "dlm\nnumpy"}
    for row in data["summary"]:
        for side in names:
            if side not in row:
                continue
            v = row[side]
            labels.append(f"{row['schedule']}\n{names[side]}")
            fwd.append(v["forward_ms"])
            host.append(v["host_ms"])
    x = range(len(labels))
    ax.bar(x, fwd, color="#4c72b0", label="forward pass")
    ax.bar(x, host, bottom=fwd, color="#dd8452", label="host work")
    for i, (f, h) in enumerate(zip(fwd, host)):
        ax.text(i, f + h, f"{f + h:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("ms per denoising step (median)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def batch(ax, path: Path) -> None:
    rows = [r for r in json.loads(path.read_text())["summary"] if not r["cfg"]]
    b = [r["batch"] for r in rows]
    ax.plot(b, [r["tok_s"] for r in rows], "o-", color="#55a868")
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [str(x) for x in b])
    ax.set_xlabel("prompts per forward pass")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("H100: throughput against batch size", fontsize=10)
    ax.set_ylim(bottom=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cpu")
    ap.add_argument("gpu")
    ap.add_argument("--batch")
    ap.add_argument("--out", default="docs/performance.png")
    args = ap.parse_args()
    n = 3 if args.batch else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.4))
    side_by_side(axes[0], Path(args.cpu), "CPU (2 cores), small random LLaDA, canvas 256")
    side_by_side(axes[1], Path(args.gpu), "H100, LLaDA-8B shapes Q4_K_M, canvas 288")
    if args.batch:
        batch(axes[2], Path(args.batch))
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
