"""The quality yardstick for tiny-code: held-out modules, dlm's own decoding engine, many settings.

    PYTHONPATH=. python scripts/eval_tiny_code.py run --model tiny-code --out out/tiny-code/yardstick-llama.json
    python scripts/eval_tiny_code.py plot out/tiny-code/yardstick.json --out docs/tiny-code-accuracy.png

Two tasks on the held-out modules (scripts/tiny_code_data.py HELD_OUT; their items are in
out/tiny-code/data/eval.json, written by ``tiny_code_data.py encode``):

* lines: one source line (3-24 tokens) masked, with 96 tokens of the file before it and 32 after
  it; exact match of the line and token accuracy over its positions. One block over the masked
  line and the text after it, as ``dlm infill`` does; temperature 0.
* funcs: a function's signature (and its docstring when it has one) as a raw prompt and a
  generated region after it; the share whose generated body, up to the first EOS, makes the
  head + body parse (``ast.parse``) and is not empty, the share that reached EOS at all, and the
  share equal to the original body.

Each setting is a (schedule, steps, --threshold / --factor, early stop) combination; every row
records the mean number of forward passes next to the accuracy, which is the curve in
docs/tiny-models.md. The decoding is dlm's engine (``dlmcli.engine.denoise_batch``) over any
forward function: llama.cpp through dlm (``run --model``) or the PyTorch model
(``train_tiny_code.py train`` runs this on the GPU right after training).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from tiny_code_data import BOS, DATA_DIR, EOS, MASK, Vocab  # noqa: E402

from dlmcli.engine.denoise import VocabInfo, denoise_batch  # noqa: E402
from dlmcli.engine.params import GenerationParams  # noqa: E402

VOCAB_INFO = VocabInfo(mask_id=MASK, shift=False, eog_ids=frozenset({EOS}), fill_id=EOS)


def line_settings(quick: bool = False):
    """(label, family, params overrides, steps as a function of the line's length n)."""
    out = []
    fracs = ((1, "n"), (2, "n/2"), (4, "n/4"), (0, "1"))
    for sched in ("block", "timestep"):
        for div, name in fracs:
            out.append((f"{sched} steps={name}", f"{sched} steps", {"schedule": sched},
                        (lambda n, d=div: max(1, math.ceil(n / d)) if d else 1)))
        for th in (0.95, 0.9, 0.8, 0.7, 0.5, 0.3):
            out.append((f"{sched} threshold={th}", f"{sched} threshold", {"schedule": sched, "threshold": th},
                        lambda n: n))
        for f in (0.5, 1.0, 2.0, 4.0):
            out.append((f"{sched} factor={f}", f"{sched} factor", {"schedule": sched, "factor": f}, lambda n: n))
    if quick:
        out = out[:2] + out[4:5]
    return out


def func_settings(quick: bool = False, lengths=(48, 64, 96)):
    """(label, family, params) for the function-body task."""
    out = []
    for G in lengths:
        for block in (8, 16, 32, G):
            if block > G or G % block or (block == G and G != 48 and block != 32 and G > 64):
                continue
            for div in (1, 2, 4):
                steps = G // div
                if steps % (G // block):
                    continue
                for es in (True, False):
                    if not es and div != 1:
                        continue  # early stop off: one row per block is enough to show what it costs
                    out.append((f"G={G} block={block} steps={steps} early_stop={'on' if es else 'off'}",
                                f"block={block} steps" + ("" if es else ", early stop off"),
                                dict(gen_length=G, block_length=block, steps=steps, schedule="block",
                                     early_stop=es)))
        for th in (0.9, 0.7, 0.5):
            out.append((f"G={G} block=8 threshold={th}", "block=8 threshold",
                        dict(gen_length=G, block_length=8, steps=G, schedule="block", threshold=th,
                             early_stop=True)))
        for f in (1.0, 2.0):
            out.append((f"G={G} block=8 factor={f}", "block=8 factor",
                        dict(gen_length=G, block_length=8, steps=G, schedule="block", factor=f, early_stop=True)))
        for div in (1, 2, 4):
            out.append((f"G={G} timestep steps={G // div}", "timestep steps",
                        dict(gen_length=G, steps=G // div, schedule="timestep", early_stop=True)))
        out.append((f"G={G} timestep threshold=0.7", "timestep threshold",
                    dict(gen_length=G, steps=G, schedule="timestep", threshold=0.7, early_stop=True)))
    if quick:
        out = [o for o in out if "G=64" in o[0]][:3]
    return out


def _decode_all(forward, canvases, gen_starts, params, trim):
    """Final canvases and passes per sequence."""
    passes = [0] * len(canvases)
    final = [None] * len(canvases)
    for steps in denoise_batch(canvases, gen_starts, params, forward, VOCAB_INFO, trim_at_eog=trim):
        for st in steps:
            passes[st.seq] += 1
            final[st.seq] = st.canvas
    return final, passes


def eval_lines(forward, items, vocab: Vocab, settings, batch: int = 64, log=print) -> list[dict]:
    by_n: dict[int, list[dict]] = {}
    for it in items:
        by_n.setdefault(len(it["target"]), []).append(it)
    rows = []
    for label, family, over, steps_of in settings:
        t0 = time.time()
        exact = tok_ok = tok_n = passes_sum = 0
        for n, group in by_n.items():
            for b0 in range(0, len(group), batch):
                chunk = group[b0:b0 + batch]
                canvases = [np.array([BOS] + it["prefix"] + [MASK] * n + it["suffix"], np.int32) for it in chunk]
                start = 1 + len(chunk[0]["prefix"])
                region = len(canvases[0]) - start
                p = GenerationParams(gen_length=region, steps=steps_of(n), block_length=region,
                                     algorithm="low-confidence", temperature=0.0, seed=0, early_stop=False,
                                     **over).validate()
                final, passes = _decode_all(forward, canvases, [start] * len(chunk), p, trim=False)
                for it, c, ps in zip(chunk, final, passes):
                    got = [int(t) for t in c[start:start + n]]
                    exact += vocab.decode(got) == vocab.decode(it["target"])
                    tok_ok += sum(a == b for a, b in zip(got, it["target"]))
                    tok_n += n
                    passes_sum += ps
        rows.append({"setting": label, "family": family, "items": len(items), "exact": exact / len(items),
                     "token_acc": tok_ok / tok_n, "passes": passes_sum / len(items),
                     "tokens_per_pass": tok_n / passes_sum})
        log(f"lines {label:28s} exact {rows[-1]['exact']:.3f} tok {rows[-1]['token_acc']:.3f} "
            f"passes {rows[-1]['passes']:.2f} ({time.time() - t0:.1f}s)")
    return rows


def body_parses(head: str, body: str) -> bool:
    if not body.strip():
        return False
    try:
        ast.parse(head + body)
    except (SyntaxError, ValueError):
        return False
    return True


def eval_funcs(forward, items, vocab: Vocab, settings, batch: int = 64, log=print, keep: int = 0) -> list[dict]:
    rows = []
    for label, family, over in settings:
        t0 = time.time()
        parsed = ended = exact = passes_sum = 0
        samples = []
        for b0 in range(0, len(items), batch):
            chunk = items[b0:b0 + batch]
            p = GenerationParams(algorithm="low-confidence", temperature=0.0, seed=0, **over).validate()
            canvases = [np.array([BOS] + it["head_ids"] + [MASK] * p.gen_length, np.int32) for it in chunk]
            starts = [1 + len(it["head_ids"]) for it in chunk]
            final, passes = _decode_all(forward, canvases, starts, p, trim=True)
            for it, c, s, ps in zip(chunk, final, starts, passes):
                gen = [int(t) for t in c[s:]]
                done = EOS in gen
                text = vocab.decode(gen[:gen.index(EOS)] if done else gen)
                ok = body_parses(it["head"], text)
                parsed += ok
                ended += done
                exact += text == it["body"]
                passes_sum += ps
                if len(samples) < keep:
                    samples.append({"head": it["head"], "generated": text, "parses": ok})
        n = len(items)
        rows.append({"setting": label, "family": family, "items": n, "parses": parsed / n, "ended": ended / n,
                     "exact": exact / n, "passes": passes_sum / n, **({"samples": samples} if keep else {})})
        log(f"funcs {label:42s} parses {parsed / n:.3f} ended {ended / n:.3f} exact {exact / n:.3f} "
            f"passes {passes_sum / n:.1f} ({time.time() - t0:.1f}s)")
    return rows


def run_all(forward, eval_path: str, out_path: str, quick: bool = False, log=print, n_lines: int | None = None,
            n_funcs: int | None = None, line_filter=None, func_filter=None) -> dict:
    items = json.load(open(eval_path))
    vocab = Vocab()
    lines = items["lines"][:n_lines] if n_lines else items["lines"]
    funcs = items["funcs"][:n_funcs] if n_funcs else items["funcs"]
    if quick:
        lines, funcs = lines[:24], funcs[:8]
    ls = [s for s in line_settings(quick) if line_filter is None or line_filter(s[0])]
    fs = [s for s in func_settings(quick) if func_filter is None or func_filter(s[0])]
    res = {"n_lines": len(lines), "n_funcs": len(funcs)}
    for task, fn in (("lines", lambda: eval_lines(forward, lines, vocab, ls, log=log)),
                     ("funcs", lambda: eval_funcs(forward, funcs, vocab, fs, batch=128, log=log, keep=12))):
        res[task] = fn()
        with open(out_path, "w") as f:  # after each task: a run cut short keeps what it has
            json.dump(res, f, indent=1)
    return res


def cmd_run(args) -> None:
    import dlmcli

    with dlmcli.load(args.model, n_threads=args.threads) as m:
        def keep(pattern):
            return None if not pattern else (lambda label: any(p in label for p in pattern.split("|")))

        run_all(m.runtime.forward, args.eval, args.out, n_lines=args.n_lines, n_funcs=args.n_funcs,
                line_filter=keep(args.lines), func_filter=keep(args.funcs))


def cmd_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.load(open(args.json))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = ((axes[0], "lines", "exact", f"held-out lines ({res['n_lines']}): exact match"),
              (axes[1], "lines", "token_acc", "held-out lines: token accuracy"),
              (axes[2], "funcs", "parses", f"held-out function bodies ({res['n_funcs']}): parse"))
    for ax, task, metric, title in panels:
        fams: dict[str, list] = {}
        for r in res.get(task, []):
            fams.setdefault(r["family"], []).append(r)
        for fam, rs in fams.items():
            rs = sorted(rs, key=lambda r: r["passes"])
            ax.plot([r["passes"] for r in rs], [r[metric] for r in rs], marker="o", label=fam)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("forward passes per item (mean)")
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="evaluate a GGUF through dlm (llama.cpp)")
    r.add_argument("--model", default="tiny-code")
    r.add_argument("--eval", default=os.path.join(DATA_DIR, "eval.json"))
    r.add_argument("--out", default="out/tiny-code/yardstick-llama.json")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--n-lines", type=int)
    r.add_argument("--n-funcs", type=int)
    r.add_argument("--lines", help="only settings whose label contains one of these ('|'-separated)")
    r.add_argument("--funcs", help="likewise for the function-body settings")
    p = sub.add_parser("plot", help="accuracy against forward passes (needs matplotlib)")
    p.add_argument("json")
    p.add_argument("--out", default="docs/tiny-code-accuracy.png")
    args = ap.parse_args(argv)
    {"run": cmd_run, "plot": cmd_plot}[args.cmd](args)


if __name__ == "__main__":
    main()
