"""The packages a user installs: scripts/check_dist.py builds the sdist and the wheel, installs each
into a fresh venv and runs the installed dlm from another directory (bundled models inside, compiled
kernel, `dlm generate -m tiny-llada "reverse hello"` -> olleh)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_sdist_and_wheel_install_into_a_fresh_venv_and_run():
    pytest.importorskip("build", reason="the 'build' package (test extra) builds the sdist and wheel")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_dist.py")], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    assert "build, install and run" in r.stdout and "tiny-code.gguf" in r.stdout
