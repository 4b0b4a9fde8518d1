"""Fixtures for the hub tests: a fake Hub on 127.0.0.1, an isolated HF cache and config, and CLI runners."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlmcli.errors import DlmError
from dlmcli.hub.__main__ import build_app

from .fakehub import FakeHub
from .ggufs import gguf_bytes

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_granted_0123456789abcdef"  # may read the gated repo
LLADA = "mradermacher/LLaDA-8B-Instruct-GGUF"
DREAM = "bartowski/Dream-org_Dream-v0-Instruct-7B-GGUF"
SHARDED = "test/Sharded-GGUF"
FOLDERS = "test/Folders-GGUF"
GATED = "gated/Gated-GGUF"
BIG = "test/Big-GGUF"
PARTS = "test/Parts-GGUF"
NOGGUF = "test/Config-Only"
BIG_SIZE = 3 * 1024 * 1024


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, bytes]:
    """The GGUF bytes the fake Hub serves, made once per session."""
    tmp = tmp_path_factory.mktemp("ggufs")
    out = {
        "llada_q2": gguf_bytes(tmp, "a.gguf", file_type=10, seed=1),
        "llada_q4": gguf_bytes(tmp, "b.gguf", file_type=15, seed=2, payload=256 * 1024),
        "llada_q8": gguf_bytes(tmp, "c.gguf", file_type=7, seed=3),
        "dream_q4": gguf_bytes(tmp, "d.gguf", arch="dream", seed=4, mask_id=80),
        "big": gguf_bytes(tmp, "e.gguf", seed=5, payload=BIG_SIZE),
    }
    for i in range(1, 4):
        out[f"shard{i}"] = gguf_bytes(tmp, f"s{i}.gguf", seed=10 + i, split=(i, 3), payload=512 * 1024)
    for i in range(1, 3):
        out[f"fshard{i}"] = gguf_bytes(tmp, f"f{i}.gguf", seed=20 + i, split=(i, 2))
    return out


def populate(hub: FakeHub, f: dict[str, bytes]) -> None:
    hub.add(
        LLADA,
        {
            "README.md": b"# LLaDA GGUF\n",
            "LLaDA-8B-Instruct.Q2_K.gguf": f["llada_q2"],
            "LLaDA-8B-Instruct.Q4_K_M.gguf": f["llada_q4"],
            "LLaDA-8B-Instruct.Q8_0.gguf": f["llada_q8"],
        },
    )
    hub.add(DREAM, {"Dream-org_Dream-v0-Instruct-7B-Q4_K_M.gguf": f["dream_q4"]})
    hub.add(
        SHARDED,
        {
            **{f"Model-Q4_K_M-0000{i}-of-00003.gguf": f[f"shard{i}"] for i in range(1, 4)},
            "Model-Q8_0.gguf": f["llada_q8"],
        },
    )
    hub.add(FOLDERS, {f"Q4_K_M/Model-Q4_K_M-0000{i}-of-00002.gguf": f[f"fshard{i}"] for i in range(1, 3)})
    hub.add(GATED, {"Gated.Q4_K_M.gguf": f["llada_q2"]}, gated=True)
    hub.tokens[GATED] = {TOKEN}
    hub.add(BIG, {"Big.Q4_K_M.gguf": f["big"]})
    hub.add(PARTS, {"Huge.Q8_0.gguf.part1of2": b"a" * 100, "Huge.Q8_0.gguf.part2of2": b"b" * 100})
    hub.add(NOGGUF, {"config.json": b"{}"})


@pytest.fixture
def hub(files):
    fake = FakeHub()
    populate(fake, files)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def env(tmp_path, monkeypatch, hub) -> dict[str, str]:
    """An isolated HF home and dlm config pointed at the fake Hub; returns the variables set."""
    for var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "DLM_MODEL",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    values = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DLM_CONFIG": str(tmp_path / "config.toml"),
        "COLUMNS": "200",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("dlmcli.hub.download.RETRY_WAIT_S", 0.01)
    return values


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def all(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli():
    """Run model commands in-process through the same error boundary as dlm: ``cli("pull", "x")``."""
    app = build_app()
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        r = runner.invoke(app, list(args), input=input)
        stderr = r.stderr
        code = r.exit_code
        if isinstance(r.exception, DlmError):
            stderr += f"Error: {r.exception}\n"
            code = r.exception.exit_code
        elif r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Result(code, r.stdout, stderr)

    return run


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()}
    out.update(env)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen:
    """`python -m dlmcli.hub ARGS` in a child process (so that a test can SIGKILL it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlmcli.hub", *args],
        env=subprocess_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cache_repo(env: dict[str, str], repo: str) -> Path:
    return Path(env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))
