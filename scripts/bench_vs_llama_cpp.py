#!/usr/bin/env python3
"""dlm against llama.cpp's own diffusion loop (`llama-diffusion-cli`), side by side, per step.

Builds `llama-diffusion-cli` with CMake from the llama.cpp that llama-cpp-python vendors (the sdist's
`vendor/llama.cpp`, same version as the installed package) into an ignored build folder (cached),
writes a random-weight GGUF, then alternates runs of both on the same file, canvas and steps, in both
schedules, and prints medians: per forward pass, the wall time split into forward pass and host work.
dlm runs through the same shared libllama (LLAMA_CPP_LIB_PATH) unless --dlm-lib installed.

How the two are matched (see docs/performance.md):
- The model's chat template is the identity, so both see BOS + the prompt's characters: the same
  prompt length P on both sides. Canvas L = P + gen_length (`-c/-b/-ub L` for the reference).
- Same sampling on both sides (--samplings, e.g. `t0` or Dream's recommended `t0.2p0.95`): the
  reference gets `--temp T --top-k K --top-p P` (`--top-k 0 --top-p 1` at t0 leaves only its `dist`
  sampler: one softmax over the vocabulary and one draw per masked position), dlm `-t T --top-k K
  --top-p P`; and the same algorithm (--algorithms; llama.cpp's `--diffusion-algorithm` number).
  With --ref-topk40 the reference runs a second time with its default sampler (top-k 40, top-p 0.95).
- Timestep schedule: same steps and eps on both. Block schedule: the reference lays blocks over
  the whole canvas from the prompt's end (L / block_length blocks, P / block_length of them empty,
  each costing one forward pass), so it gets steps = L/bl * k and dlm steps = gen/bl * k: both take k
  steps per real block. Times are compared per forward pass actually run.
- Reference per pass: its printed total over the passes it ran (progress lines); host = its printed
  sampling time; forward = the rest. dlm per pass: the CLI's --json timings (total, forward inside
  llama_decode + logits sync); host = total - forward (scoring, choosing, bookkeeping).

Example (CPU here):
  python3 scripts/bench_vs_llama_cpp.py --llama-src /tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp \\
      --make-model small --threads 2 --reps 5 --out docs/bench/cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDENTITY_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
REF_TOTAL = re.compile(r"total time: ([\d.]+)ms, time per step: ([\d.]+)ms, sampling time per step: ([\d.]+)ms")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- building the reference ------------------------------------------------------------------------
def find_sources(args) -> Path:
    if args.llama_src:
        return Path(args.llama_src)
    import importlib.metadata as md

    version = md.version("llama_cpp_python")
    cache = Path(args.build_dir) / "sdist"
    src = cache / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not src.exists():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"downloading the llama-cpp-python {version} sdist (its vendor/llama.cpp is the reference)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(cache)], check=True)
        with tarfile.open(next(cache.glob(f"llama_cpp_python-{version}.tar.gz"))) as t:
            t.extractall(cache, filter="data")
    return src


def build(args) -> Path:
    """Build llama-diffusion-cli (+ llama-quantize) and the shared libs; returns the bin folder."""
    src = find_sources(args)
    out = Path(args.build_dir) / ("llama-cuda" if args.cuda else "llama-cpu")
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_EXAMPLES=ON",
             "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"]
    if args.cuda:
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_arch}"]
    targets = ["llama-diffusion-cli"] + (["llama-quantize"] if args.quant else [])
    stamp = out / "dlm-bench-stamp.json"
    want = {"src": str(src.resolve()), "flags": flags, "targets": targets}
    binary = out / "bin" / "llama-diffusion-cli"
    if binary.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        log(f"using cached build {out}")
        return out / "bin"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    t0 = time.time()
    subprocess.run(["cmake", "-S", str(src), "-B", str(out), *gen, *flags], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(out), "--target", *targets, "-j", str(args.jobs)], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(want))
    log(f"built {', '.join(targets)} in {time.time() - t0:.0f} s")
    return out / "bin"


# --- the model ------------------------------------------------------------------------------------
def write_llada8b_f16(path: Path) -> None:
    """Random weights with LLaDA-8B's shapes, F16 (~16 GB; one array per shape, ~1 min)."""
    from tools.ggufgen import LLADA_8B_SHAPES as s, LLADA_8B_VOCAB, write_random_gguf

    tmp = path.with_suffix(".tmp")
    t0 = time.time()
    write_random_gguf(tmp, "llada", seed=0, n_layer=s.n_layer, n_embd=s.n_embd, n_head=s.n_head, n_ff=s.n_ff,
                      n_vocab=LLADA_8B_VOCAB, context_length=4096, dtype="f16",
                      chat_template=IDENTITY_TEMPLATE, name="random-llada-8b-shape")
    tmp.rename(path)  # complete files only: a killed run leaves no half model behind
    log(f"wrote {path} in {time.time() - t0:.0f} s")


def write_dream7b_f16(path: Path) -> None:
    """Random weights with Dream-7B's shapes (Qwen2.5-7B: GQA 28/4 heads, q/k/v biases), F16."""
    from tools.ggufgen import write_random_gguf

    tmp = path.with_suffix(".tmp")
    t0 = time.time()
    write_random_gguf(tmp, "dream", seed=0, n_layer=28, n_embd=3584, n_head=28, n_head_kv=4, n_ff=18944,
                      n_vocab=152064, context_length=4096, dtype="f16", chat_template=IDENTITY_TEMPLATE,
                      name="random-dream-7b-shape")
    tmp.rename(path)
    log(f"wrote {path} in {time.time() - t0:.0f} s")


BIG_MODELS = {"llada8b": write_llada8b_f16, "dream7b": write_dream7b_f16}


def make_model(args, bindir: Path) -> Path:
    from tools.ggufgen import write_random_gguf

    d = Path(args.build_dir) / "models"
    d.mkdir(parents=True, exist_ok=True)
    if args.make_model in ("small", "small-dream"):
        arch = "llada" if args.make_model == "small" else "dream"
        path = d / ("bench-small.gguf" if arch == "llada" else "bench-small-dream.gguf")
        if not path.exists():
            # The CPU anchor's shape (docs/performance.md): 4 layers, d 512, vocab 32,280 (46M parameters).
            write_random_gguf(path, arch, seed=0, n_layer=4, n_embd=512, n_head=8, n_ff=1536,
                              n_vocab=32280, context_length=4096, chat_template=IDENTITY_TEMPLATE)
        return path
    shape = args.make_model
    f16 = d / f"{shape}-shape-f16.gguf"
    final = d / f"{shape}-shape-{args.quant or 'f16'}.gguf"
    if final.exists():
        return final
    if not f16.exists():
        BIG_MODELS[shape](f16)
    if args.quant:
        t0 = time.time()
        tmp = final.with_suffix(".tmp")
        subprocess.run([str(bindir / "llama-quantize"), str(f16), str(tmp), args.quant, str(args.jobs)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp.rename(final)
        if not args.keep_f16:
            f16.unlink()
        log(f"quantized to {args.quant} in {time.time() - t0:.0f} s")
    return final


# --- one run of each ------------------------------------------------------------------------------
def plan(args, schedule: str) -> dict:
    """Steps for both sides so that they take the same steps per block (see the module doc)."""
    P, G, bl = args.prompt_len, args.gen_length, args.block_length
    L = P + G
    if schedule == "timestep":
        return {"ref_steps": args.steps, "dlm_steps": args.steps, "L": L}
    if G % bl or L % bl:
        raise SystemExit(f"block schedule: prompt length {P} and gen length {G} must be multiples of {bl}")
    per_block = args.steps // (G // bl)
    return {"ref_steps": per_block * (L // bl), "dlm_steps": per_block * (G // bl), "L": L}


REF_SIDES = ("llama.cpp", "llama.cpp top-k 40")  # same filters as dlm; its default sampler (top-k 40, top-p 0.95)
REF_ALGORITHM = {"origin": 0, "entropy": 1, "margin": 2, "random": 3, "low-confidence": 4}


def parse_sampling(text: str) -> tuple[float, int, float]:
    """'t0.2p0.95' -> (temperature 0.2, top-k 0, top-p 0.95); 't0' -> (0, 0, 1)."""
    m = re.fullmatch(r"t([\d.]+)(?:k(\d+))?(?:p([\d.]+))?", text)
    if not m:
        raise SystemExit(f"bad sampling {text!r}: write t<temperature>[k<top-k>][p<top-p>]")
    return float(m.group(1)), int(m.group(2) or 0), float(m.group(3) or 1.0)


def run_ref(args, bindir: Path, model: Path, prompt: str, schedule: str, pl: dict, side: str = "llama.cpp",
            algorithm: str = "low-confidence", sampling: str = "t0") -> dict:
    L = pl["L"]
    temp, top_k, top_p = parse_sampling(sampling)
    filters = ["--top-k", "40", "--top-p", "0.95"] if side == "llama.cpp top-k 40" else \
        ["--top-k", str(top_k), "--top-p", str(top_p)]
    cmd = [str(bindir / "llama-diffusion-cli"), "-m", str(model), "-p", prompt, "-c", str(L), "-b", str(L),
           "-ub", str(L), "-ngl", str(args.ngl),
           *(["-t", str(args.threads), "-tb", str(args.threads)] if args.threads else []), "--temp", str(temp), *filters, "-s", "0", "--diffusion-algorithm", str(REF_ALGORITHM[algorithm]),
           "--diffusion-steps", str(pl["ref_steps"])]
    cmd += ["--diffusion-block-length", str(args.block_length)] if schedule == "block" else \
        ["--diffusion-eps", str(args.eps)]
    for _ in range(5):
        # Into a file, not a pipe: llama.cpp logs from a worker thread, and on busy cores the process
        # exited before that thread wrote the timing line into a pipe (rc 0, the log cut short).
        with tempfile.TemporaryFile() as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
            f.seek(0)
            out = f.read().decode(errors="replace")
        m = REF_TOTAL.search(out)
        if r.returncode != 0 or m:
            break
    if r.returncode != 0 or not m:
        raise RuntimeError(f"llama-diffusion-cli failed (rc {r.returncode}):\n{out[-3000:]}")
    total_ms = float(m.group(1))
    sampling_ms = float(m.group(3)) * pl["ref_steps"]  # it divides by the planned steps
    passes = out.count("diffusion step:")
    return {"side": side, "schedule": schedule, "algorithm": algorithm, "sampling": sampling, "passes": passes,
            "total_ms": total_ms, "step_ms": total_ms / passes, "host_ms": sampling_ms / passes,
            "forward_ms": (total_ms - sampling_ms) / passes}


DLM_SIDES = {  # side name -> DLM_SCORING (which implementation scores the rows)
    "dlm": "",  # the C kernel when built (the run's args record which: scoring_kernel)
    "dlm numpy scoring": "numpy",  # the same loop with the numpy fallback
}


def scoring_kernel() -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", "from dlmcli.engine import scoring; print(scoring.kernel_name())"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    return r.stdout.strip() or r.stderr[-300:]


def run_dlm(args, bindir: Path, model: Path, prompt: str, schedule: str, pl: dict, side: str = "dlm",
            algorithm: str = "low-confidence", sampling: str = "t0") -> dict:
    temp, top_k, top_p = parse_sampling(sampling)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["DLM_SCORING"] = DLM_SIDES[side]
    if args.dlm_lib == "build":
        env["LLAMA_CPP_LIB_PATH"] = str(bindir.resolve())
    cmd = [sys.executable, "-m", "dlmcli", "generate", "-m", str(model), "--raw", prompt, "--json",
           "-n", str(args.gen_length), "-s", str(pl["dlm_steps"]), "--schedule", schedule,
           *(["--block-length", str(args.block_length)] if schedule == "block" else ["--eps", str(args.eps)]),
           "-t", str(temp), "--top-k",
           str(top_k), "--top-p", str(top_p), "-a", algorithm, "--no-early-stop", "--seed", "0", "--ngl",
           str(args.ngl), "--no-visual"] + (["--threads", str(args.threads)] if args.threads else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)  # this checkout's dlmcli
    if r.returncode != 0:
        raise RuntimeError(f"dlm failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout)
    t = res["timings"]
    n = res["steps"]
    if len(res["prompt_tokens"]) != args.prompt_len:
        raise RuntimeError(f"dlm saw {len(res['prompt_tokens'])} prompt tokens, expected {args.prompt_len}")
    return {"side": side, "schedule": schedule, "algorithm": algorithm, "sampling": sampling, "passes": n,
            "total_ms": t["total_s"] * 1e3, "step_ms": t["total_s"] * 1e3 / n,
            "host_ms": (t["total_s"] - t["forward_s"]) * 1e3 / n, "forward_ms": t["forward_s"] * 1e3 / n,
            "scoring_ms": t.get("sampling_s", 0.0) * 1e3 / n}


def summarize(runs: list[dict], schedules: list[str]) -> list[dict]:
    rows = []
    keys = []
    for r in runs:
        key = (r["schedule"], r.get("algorithm", "low-confidence"), r.get("sampling", "t0"))
        if key not in keys:
            keys.append(key)
    for sch, alg, smp in keys:
        by = {}
        for side in [*REF_SIDES, *DLM_SIDES]:
            rs = [r for r in runs if (r["schedule"], r.get("algorithm", "low-confidence"), r.get("sampling", "t0"))
                  == (sch, alg, smp) and r["side"] == side]
            if not rs:
                continue
            by[side] = {k: statistics.median(r[k] for r in rs) for k in ("step_ms", "forward_ms", "host_ms")}
            # The fastest run too: on a shared machine other processes only ever add time.
            by[side]["min_step_ms"] = min(r["step_ms"] for r in rs)
            by[side]["passes"] = rs[0]["passes"]
            by[side]["n"] = len(rs)
            by[side]["step_ms_all"] = sorted(round(r["step_ms"], 2) for r in rs)
        row = {"schedule": sch, "algorithm": alg, "sampling": smp, **by}
        if "dlm" in by and "llama.cpp" in by:
            row["ratio"] = by["dlm"]["step_ms"] / by["llama.cpp"]["step_ms"]
            row["ratio_min"] = by["dlm"]["min_step_ms"] / by["llama.cpp"]["min_step_ms"]
        if "dlm" in by and "llama.cpp top-k 40" in by:
            row["ratio_topk40"] = by["dlm"]["step_ms"] / by["llama.cpp top-k 40"]["step_ms"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| schedule | algorithm | sampling | side | passes | per step (ms) | fastest run (ms) | forward (ms) "
           "| host (ms) | host/forward | dlm/ref per step (median; fastest) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for side in [*REF_SIDES, *DLM_SIDES]:
            if side not in r:
                continue
            v = r[side]
            ratio = ""
            if side == "dlm" and "ratio" in r:
                ratio = f"{r['ratio']:.2f}x; {r['ratio_min']:.2f}x"
            if side == "dlm" and "ratio_topk40" in r:
                ratio += f" (vs top-k 40: {r['ratio_topk40']:.2f}x)"
            out.append(f"| {r['schedule']} | {r['algorithm']} | {r['sampling']} | {side} | {v['passes']} | "
                       f"{v['step_ms']:.1f} | {v['min_step_ms']:.1f} | {v['forward_ms']:.1f} | {v['host_ms']:.1f} | "
                       f"{v['host_ms'] / max(v['forward_ms'], 1e-9):.1%} | {ratio} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-src", help="llama.cpp sources (default: download the installed version's sdist)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "bench"), help="cache for builds and models")
    ap.add_argument("--cuda", action="store_true", help="build with CUDA")
    ap.add_argument("--cuda-arch", default="90")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--model", help="an existing GGUF (its chat template must be the identity; see --make-model)")
    ap.add_argument("--make-model", choices=["small", "small-dream", "llada8b", "dream7b"], default="small")
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 file after quantizing")
    ap.add_argument("--algorithms", default="low-confidence", help="comma list: low-confidence,margin,entropy,random,origin")
    ap.add_argument("--samplings", default="t0", help="comma list of t<T>[k<top-k>][p<top-p>], e.g. t0,t0.2p0.95")
    ap.add_argument("--quant", default=None, help="llama-quantize type for --make-model llada8b, e.g. Q4_K_M")
    ap.add_argument("--prompt-len", type=int, default=32, help="prompt tokens, BOS included")
    ap.add_argument("--gen-length", type=int, default=224)
    ap.add_argument("--steps", type=int, default=56, help="dlm's steps (the reference's follow, see above)")
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--schedules", default="block,timestep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="1: one untimed run of each side first")
    ap.add_argument("--max-seconds", type=float, default=0, help="start no repetition after this (at least 2 run)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                    help="both sides' threads; 0: each side's own default (dlm without --threads, llama.cpp without -t)")
    ap.add_argument("--ngl", type=int, default=0, help="layers on the GPU (999: all)")
    ap.add_argument("--dlm-lib", choices=["build", "installed"], default="build")
    ap.add_argument("--ref-topk40", action="store_true",
                    help="also time the reference with its default sampler (top-k 40, top-p 0.95; same temperature)")
    ap.add_argument("--no-ref-same", action="store_true",
                    help="skip the reference with dlm's filters (with --ref-topk40: only its default sampler runs)")
    ap.add_argument("--dlm-numpy", action="store_true",
                    help="also time dlm with its numpy scoring instead of the C kernel (DLM_SCORING=numpy)")
    ap.add_argument("--out", help="write all runs and the summary as JSON here")
    ap.add_argument("--build-only", action="store_true", help="build (and write the model), then stop")
    args = ap.parse_args()

    bindir = build(args)
    model = Path(args.model) if args.model else make_model(args, bindir)
    if args.build_only:
        print(model)
        return
    args.scoring_kernel = scoring_kernel()
    log(f"dlm scores rows with: {args.scoring_kernel}")
    prompt = ("reverse the words of this sentence please " * 50)[: args.prompt_len - 1]  # + BOS
    schedules = args.schedules.split(",")
    algorithms = args.algorithms.split(",")
    samplings = args.samplings.split(",")
    runs = []
    if args.warmup:  # page cache, GPU clocks, CUDA module loading: not part of either side's numbers
        pl = plan(args, schedules[-1])
        short = {**pl, "ref_steps": 4, "dlm_steps": 4} if schedules[-1] == "timestep" else pl
        run_ref(args, bindir, model, prompt, schedules[-1], short, "llama.cpp top-k 40" if args.no_ref_same else "llama.cpp",
                algorithms[0], samplings[0])
        run_dlm(args, bindir, model, prompt, schedules[-1], short, "dlm", algorithms[0], samplings[0])
    t_start = time.time()
    for rep in range(args.reps):
        if rep >= 2 and args.max_seconds and time.time() - t_start > args.max_seconds:
            log(f"stopping after {rep} repetitions (--max-seconds {args.max_seconds})")
            break
        for sch, alg, smp in itertools.product(schedules, algorithms, samplings):
            pl = plan(args, sch)
            sides = ([] if args.no_ref_same else ["llama.cpp"]) + ["dlm"] + \
                (["dlm numpy scoring"] if args.dlm_numpy else []) + (["llama.cpp top-k 40"] if args.ref_topk40 else [])
            for side in sides if rep % 2 == 0 else sides[::-1]:
                if side in DLM_SIDES:
                    r = run_dlm(args, bindir, model, prompt, sch, pl, side, alg, smp)
                else:
                    r = run_ref(args, bindir, model, prompt, sch, pl, side, alg, smp)
                r["rep"] = rep
                runs.append(r)
                save(args, model, runs, schedules)  # after every run: a killed run keeps what it had
                log(f"rep {rep} {sch:8s} {alg:14s} {smp:10s} {r['side']:18s} {r['passes']:3d} passes  "
                    f"{r['step_ms']:7.1f} ms/step  (forward {r['forward_ms']:.1f}, host {r['host_ms']:.1f})")
    print(table(summarize(runs, schedules)))


def save(args, model: Path, runs: list[dict], schedules: list[str]) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = dict(vars(args), model=str(model), canvas=args.prompt_len + args.gen_length)
        Path(args.out).write_text(json.dumps({"args": meta, "runs": runs, "summary": summarize(runs, schedules)},
                                             indent=1))


if __name__ == "__main__":
    main()
