"""Shared fixtures: small random-weight GGUFs written by the tests themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory) -> Path:
    from tools.ggufgen import write_random_gguf

    d = tmp_path_factory.mktemp("ggufs")
    # std 0.5 gives peaked, well-separated logits, so confidence orderings have no near-ties.
    write_random_gguf(d / "llada.gguf", "llada", seed=1, std=0.5, context_length=128)
    write_random_gguf(d / "dream.gguf", "dream", seed=2, std=0.5, context_length=128)
    write_random_gguf(d / "autoregressive.gguf", "llama", seed=3)
    write_random_gguf(d / "nomask.gguf", "llada", seed=4, mask_token=False)
    write_random_gguf(d / "llada-noshiftkey.gguf", "llada", seed=1, std=0.5, shift_logits=None,
                      context_length=128)
    write_random_gguf(d / "dream-noshiftkey.gguf", "dream", seed=2, std=0.5, shift_logits=None,
                      context_length=128)
    write_random_gguf(d / "notemplate.gguf", "llada", seed=1, std=0.5, chat_template=None)
    return d


def sigint_default() -> None:
    """preexec_fn: the child takes Ctrl-C as a terminal user's process does, even when the test run
    itself was started with SIGINT ignored (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_dlm(*args, input: bytes | None = None, env: dict | None = None, timeout: float = 120):
    """Run the real CLI in a subprocess; returns CompletedProcess with bytes stdout/stderr."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "dlmcli", *map(str, args)], input=input if input is not None
                          else b"", capture_output=True, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def llada(gguf_dir):
    """The random llada model, loaded once per test module."""
    from dlmcli.api import Model

    with Model(gguf_dir / "llada.gguf") as m:
        yield m


@pytest.fixture(scope="module")
def dream(gguf_dir):
    from dlmcli.api import Model

    with Model(gguf_dir / "dream.gguf") as m:
        yield m
