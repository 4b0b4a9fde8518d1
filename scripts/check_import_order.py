#!/usr/bin/env python3
"""Device check: does loading a model survive every import order (numpy first, llama_cpp first, ...)?

Each variant runs in a fresh interpreter (a crash must not take the check with it): it imports
things in a given order, then loads MODEL with all layers on the GPU and runs one forward pass.
Prints one line per variant: ok, or how it died (signal, last lines of its faulthandler trace).

  python3 scripts/check_import_order.py -m some.gguf --ngl 999        # on the GPU machine
  python3 scripts/check_import_order.py -m some.gguf --ngl 0          # CPU (what the test runs)

Exit status 1 if a variant that dlm must survive (those through dlmcli) fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Load + one decode with nothing but llama_cpp's bindings.
RAW_LOAD = """
import llama_cpp.llama_cpp as L
L.llama_backend_init()
mp = L.llama_model_default_params(); mp.n_gpu_layers = {ngl}
m = L.llama_model_load_from_file({path!r}.encode(), mp)
assert m, "model load failed"
cp = L.llama_context_default_params(); cp.n_ctx = cp.n_batch = cp.n_ubatch = 64
ctx = L.llama_init_from_model(m, cp)
assert ctx, "context failed"
toks = (L.llama_token * 8)(*([1] * 8))
rc = L.llama_decode(ctx, L.llama_batch_get_one(toks, 8))
assert rc == 0, rc
L.llama_free(ctx); L.llama_model_free(m)
print("forward ok")
"""

# The same through dlm's public API.
DLM_LOAD = """
from dlmcli.api import Model
with Model({path!r}, n_gpu_layers={ngl}) as m:
    r = m.generate("abc", raw=True, gen_length=8, steps=2, block_length=8)
print("forward ok", r.steps)
"""

OPENBLAS_ONLY = """
import ctypes, glob, importlib.util, os
spec = importlib.util.find_spec("numpy")
libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "numpy.libs")
for pat in {pats!r}:
    for f in sorted(glob.glob(os.path.join(libs, pat))):
        ctypes.CDLL(f); print("preloaded", os.path.basename(f))
"""


STDCXX = "import ctypes\nctypes.CDLL('libstdc++.so.6'{mode})\n"
GLOBAL = ", mode=ctypes.RTLD_GLOBAL"


def variants(path: str, ngl: int) -> list[tuple[str, str, dict, bool]]:
    """(name, code, extra environment, must dlm survive it)."""
    raw = RAW_LOAD.format(path=path, ngl=ngl)
    dlm = DLM_LOAD.format(path=path, ngl=ngl)
    has_torch = importlib.util.find_spec("torch") is not None
    v = [
        ("llama_cpp first, then numpy", "import llama_cpp.llama_cpp\nimport numpy\n" + raw, {}, False),
        ("numpy first", "import numpy\n" + raw, {}, False),
        ("numpy first, OPENBLAS_NUM_THREADS=1", "import numpy\n" + raw, {"OPENBLAS_NUM_THREADS": "1"}, False),
        ("numpy first, OMP_NUM_THREADS=1", "import numpy\n" + raw, {"OMP_NUM_THREADS": "1"}, False),
        ("numpy's OpenBLAS only (ctypes), first", OPENBLAS_ONLY.format(pats=["*openblas*"]) + raw, {}, False),
        ("numpy's other libs only (ctypes), first", OPENBLAS_ONLY.format(pats=["libgfortran*", "libquadmath*"]) + raw,
         {}, False),
        ("libstdc++ only (ctypes, private), first", STDCXX.format(mode="") + raw, {}, False),
        ("libstdc++ global, then numpy", STDCXX.format(mode=GLOBAL) + "import numpy\n" + raw, {}, False),
        ("numpy, then libstdc++ made global", "import numpy\n" + STDCXX.format(mode=GLOBAL) + raw, {}, False),
        ("numpy, llama_cpp, then libstdc++ made global",
         "import numpy\nimport llama_cpp.llama_cpp\n" + STDCXX.format(mode=GLOBAL) + raw, {}, False),
        ("numpy first, LD_PRELOAD=libstdc++", "import numpy\n" + raw, {"LD_PRELOAD": "libstdc++.so.6"}, False),
        ("dlm, nothing imported before", dlm, {}, True),
        ("dlm, numpy imported first", "import numpy\n" + dlm, {}, True),
        ("dlm, numpy used first", "import numpy\nnumpy.ones((512, 512)) @ numpy.ones((512, 512))\n" + dlm, {}, True),
    ]
    if has_torch:
        v.insert(4, ("torch first", "import torch\n" + raw, {}, False))
        v.append(("dlm, torch imported first", "import torch\n" + dlm, {}, True))
    return v


def run(code: str, env_extra: dict, timeout: float) -> tuple[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    try:
        # cwd=ROOT: `-c` puts the working directory first on sys.path; this checkout's dlmcli must win.
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                           env=env, timeout=timeout, errors="replace", cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", ""
    if r.returncode == 0 and "forward ok" in r.stdout:
        return "ok", ""
    if r.returncode < 0:
        status = f"killed by {signal.Signals(-r.returncode).name}"
    else:
        status = f"exit {r.returncode}"
    tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-12:])
    return status, tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--ngl", type=int, default=999)
    ap.add_argument("--only-dlm", action="store_true", help="run only the variants that go through dlm")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--dump", help="write each variant's code to DIR/NN.py (to rerun one under a debugger)")
    args = ap.parse_args()
    bad = 0
    for i, (name, code, env, must) in enumerate(variants(str(Path(args.model).resolve()), args.ngl)):
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            Path(args.dump, f"{i:02d}.py").write_text(f"# {name} {env}\n" + code)
        if args.only_dlm and not must:
            continue
        status, tail = run(code, env, args.timeout)
        print(f"{name:45s} {status}", flush=True)
        if status != "ok":
            print("    " + tail.replace("\n", "\n    "), flush=True)
            bad += must
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
