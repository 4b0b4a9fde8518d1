"""Accuracy of the bundled tiny models through dlm itself (the code path of `dlm generate`).

    PYTHONPATH=. python scripts/eval_tiny_dlm.py --n 200 --steps 2 4 8 16

Each prompt is a fresh random `reverse WORD` (3-12 lowercase letters) or `add A B` (0 <= A, B <= 999);
an answer counts when the generated text equals the expected answer exactly. Everything but --steps
is dlm's default for the model (the GGUF's dlm.* keys over the family defaults); "default" runs
with no override at all.
"""

from __future__ import annotations

import argparse
import json
import random
import time


def draw(rng: random.Random, kind: str) -> tuple[str, str]:
    if kind == "reverse":
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
        return f"reverse {w}", w[::-1]
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"add {a} {b}", str(a + b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-llada", "tiny-dream"])
    ap.add_argument("--n", type=int, default=200, help="prompts per task")
    ap.add_argument("--steps", nargs="+", default=["default", "2", "4", "8", "16"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()

    import dlmcli

    table = {}
    for name in args.models:
        with dlmcli.load(name, n_threads=args.threads) as m:
            for kind in ("reverse", "add"):
                rng = random.Random(f"{args.seed}:{kind}")
                prompts = [draw(rng, kind) for _ in range(args.n)]
                for st in args.steps:
                    kw = {} if st == "default" else {"steps": int(st)}
                    t0 = time.time()
                    ok, wrong = 0, []
                    for i, (q, want) in enumerate(prompts):
                        got = m.generate(q, seed=i, **kw).text
                        ok += got == want
                        if got != want and len(wrong) < 5:
                            wrong.append(f"{q} -> {got!r} (want {want})")
                    acc = ok / len(prompts)
                    table[f"{name}/{kind}/steps={st}"] = acc
                    print(f"{name:11s} {kind:8s} steps={st:7s} {acc:.3f}  ({time.time() - t0:.1f}s) {wrong[:3]}",
                          flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "seed": args.seed, "accuracy": table}, f, indent=1)


if __name__ == "__main__":
    main()
