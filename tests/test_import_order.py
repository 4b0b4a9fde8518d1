"""Import order: dlm must load models whatever the program imported first (numpy, torch, ...).

The crash this guards against needs a CUDA build (docs/import-order.md); here the
fix itself is checked (libstdc++ is in the global symbol scope once dlmcli's runtime is imported)
and the device check script runs its dlm variants on the CPU.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol scopes")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_libstdcxx_is_global_after_numpy_then_dlm():
    probe = "import ctypes; print(hasattr(ctypes.CDLL(None), '_ZNSo9_M_insertIlEERSoT_'))"
    after = _run("import numpy\nimport dlmcli.api\n" + probe)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "True"


@pytest.mark.slow
def test_device_check_script_dlm_variants_on_cpu(gguf_dir):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_import_order.py"), "-m",
                        str(gguf_dir / "llada.gguf"), "--ngl", "0", "--only-dlm"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) >= 3 and all(line.rstrip().endswith("ok") for line in lines), lines
