#!/usr/bin/env python3
"""docs/performance-sampling.png: per-step time (forward + host) of dlm and llama-diffusion-cli for
every algorithm and sampling in side-by-side JSON files of scripts/bench_vs_llama_cpp.py (needs
matplotlib).

  python3 scripts/plot_sampling.py docs/bench/h200-dream7b.json docs/bench/h200-llada8b.json \\
      --titles "Dream-7B shape, H200" "LLaDA-8B shape, H200" --out docs/performance-sampling.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIDES = {"dlm": ("dlm", "tab:blue"), "llama.cpp": ("llama.cpp, same filters", "tab:orange"),
         "llama.cpp top-k 40": ("llama.cpp, its default sampler", "tab:green")}


def panel(ax, path: Path, title: str) -> None:
    rows = json.loads(path.read_text())["summary"]
    x = 0.0
    ticks, labels = [], []
    schedules = {row["schedule"] for row in rows}
    for row in rows:
        start = x
        for side, (name, color) in SIDES.items():
            if side not in row:
                continue
            v = row[side]
            ax.bar(x, v["forward_ms"], color=color, alpha=0.45, width=0.8)
            ax.bar(x, v["host_ms"], bottom=v["forward_ms"], color=color, width=0.8,
                   label=name if row is rows[0] else None)
            x += 1
        ticks.append((start + x - 1) / 2)
        labels.append((f"{row['schedule']}\n" if len(schedules) > 1 else "") + f"{row['algorithm']}\n{row['sampling']}")
        x += 0.8
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylabel("ms per step (pale: forward pass, dark: host)")
    top = max(r[side]["step_ms"] for r in rows for side in SIDES if side in r)
    low = min(r[side]["step_ms"] for r in rows for side in SIDES if side in r)
    if top > 8 * low:  # a log scale only where bars differ by an order of magnitude; else from 0
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--titles", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("docs/performance-sampling.png"))
    args = ap.parse_args()
    titles = args.titles or [f.stem for f in args.files]
    fig, axes = plt.subplots(len(args.files), 1, figsize=(12, 4.2 * len(args.files)), squeeze=False)
    for ax, f, t in zip(axes[:, 0], args.files, titles):
        panel(ax, f, t)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
