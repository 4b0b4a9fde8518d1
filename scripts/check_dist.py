#!/usr/bin/env python3
"""Build dlm's sdist and wheel, install each into a fresh venv, and use the installed copy from elsewhere.

  python3 scripts/check_dist.py            # run by .ci/run and by tests/test_dist.py
  python3 scripts/check_dist.py --keep DIR # leave the builds and venvs in DIR

Checks that the sdist carries the C sources (kernel, abort callback), every bundled model and the playground page; that
the wheel (built from that sdist, as pip builds one) carries both compiled and the models; and
that in each venv, run from another directory with PYTHONPATH unset, dlm imports from the venv (not
from this checkout), `dlm --version` names the version, the scoring kernel and the abort callback are
the compiled ones, every bundled model is listed, and `dlm generate -m tiny-llada "reverse hello"` prints olleh.
No network: built without build isolation and installed with --no-deps into venvs that see the
system's site-packages (llama-cpp-python takes minutes to compile; it is installed there already).
Exit status 1 with one line per failed check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(p.name for p in (ROOT / "dlmcli" / "models").glob("*.gguf"))
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


class Failed(Exception):
    pass


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")
    return r


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_members(kind: str, names: set[str], prefix: str, wanted: list[str]) -> list[str]:
    return [f"{kind}: {w} is missing" for w in wanted if prefix + w not in names]


def build(out: Path) -> tuple[Path, Path, list[str]]:
    # python -m build makes the sdist, then the wheel from the unpacked sdist: a file the sdist
    # lacks is missing from the wheel too.
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT])
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    problems = []
    with tarfile.open(sdist) as t:
        names = set(t.getnames())
    problems += check_members("sdist", names, f"dlmcli-{VERSION}/", [
        "setup.py", "pyproject.toml", "README.md", "dlmcli/engine/_rowscore.c", "dlmcli/runtime/_abort.c",
        "dlmcli/serve/playground.html",
        *(f"dlmcli/models/{m}" for m in MODELS)])
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    problems += check_members("wheel", names, "", [
        "dlmcli/serve/playground.html", *(f"dlmcli/models/{m}" for m in MODELS)])
    if not any(re.fullmatch(r"dlmcli/engine/_rowscore\..*(so|pyd)", n) for n in names):
        problems.append("wheel: the compiled scoring kernel (dlmcli/engine/_rowscore.*.so) is missing")
    if not any(re.fullmatch(r"dlmcli/runtime/_abort\..*(so|pyd)", n) for n in names):
        problems.append("wheel: the compiled abort callback (dlmcli/runtime/_abort.*.so) is missing")
    problems += [f"wheel: {n} is not part of the package" for n in sorted(names)
                 if not n.startswith(("dlmcli/", f"dlmcli-{VERSION}.dist-info/"))]
    return sdist, wheel, problems


def check_install(kind: str, artifact: Path, work: Path, problems: list[str]) -> None:
    venv = work / f"venv-{kind}"
    # --without-pip: no ensurepip needed (Debian ships it apart); pip comes from the system's site-packages.
    run([sys.executable, "-m", "venv", "--clear", "--system-site-packages", "--without-pip", venv])
    py, dlm = venv / "bin" / "python", venv / "bin" / "dlm"
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", artifact])
    elsewhere = work / "cwd"
    elsewhere.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DLM_")}
    env.update(HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(work / "config"), HF_HOME=str(work / "hf"))

    where = run([py, "-c", "import dlmcli, dlmcli.engine.scoring as s, dlmcli.runtime.native as n; "
                 "print(dlmcli.__file__); print(s.kernel_name()); print(n._C_HOOK)"], cwd=elsewhere, env=env).stdout.split("\n")
    pkg = Path(where[0]).parent
    if not pkg.is_relative_to(venv):
        problems.append(f"{kind}: dlmcli was imported from {pkg}, not from the venv")
    if where[1] != "c":
        problems.append(f"{kind}: the scoring kernel is {where[1]!r}, not the compiled one ('c')")
    if where[2] != "True":
        problems.append(f"{kind}: the abort callback is Python's, not the compiled one")
    for m in MODELS:
        if not (pkg / "models" / m).is_file():
            problems.append(f"{kind}: {m} is not installed")
        elif sha256(pkg / "models" / m) != sha256(ROOT / "dlmcli" / "models" / m):
            problems.append(f"{kind}: the installed {m} differs from the checkout's")

    version = run([dlm, "--version"], cwd=elsewhere, env=env).stdout
    if not version.startswith(f"dlm {VERSION}\n"):
        problems.append(f"{kind}: dlm --version printed {version.splitlines()[:1]}, not 'dlm {VERSION}'")
    listed = run([dlm, "models"], cwd=elsewhere, env=env).stdout
    for m in MODELS:
        name = m.removesuffix(".gguf")
        if not re.search(rf"^{re.escape(name)}\b.*\bbundled$", listed, re.M):
            problems.append(f"{kind}: dlm models does not list {name} as bundled")
    answer = run([dlm, "generate", "-m", "tiny-llada", "reverse hello"], cwd=elsewhere, env=env).stdout
    if answer != "olleh\n":
        problems.append(f"{kind}: dlm generate -m tiny-llada 'reverse hello' printed {answer!r}, not 'olleh'")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", metavar="DIR", help="build and install in DIR and leave it there")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlm-dist-") as tmp:
        work = Path(args.keep or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        try:
            sdist, wheel, problems = build(work / "dist")
            for kind, artifact in (("wheel", wheel), ("sdist", sdist)):
                try:
                    check_install(kind, artifact, work, problems)
                except Failed as e:
                    problems.append(f"{kind}: {e}")
        except Failed as e:
            problems.append(str(e))
    for p in problems:
        print(f"check_dist: {p}", file=sys.stderr)
    if not problems:
        print(f"check_dist: sdist and wheel of dlm {VERSION} build, install and run (models: {', '.join(MODELS)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
