"""A pull killed at any point resumes: bytes already on disk are not served again (the fake Hub counts them)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from dlmcli.errors import ModelError
from dlmcli.hub import parse_spec, resolve_model
from dlmcli.hub.download import PullInterrupted, PullProgress, pull

from .conftest import BIG, SHARDED, cache_repo, spawn

BIG_FILE = "Big.Q4_K_M.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kill_when(proc, condition, timeout: float = 20.0) -> None:
    """SIGKILL the child as soon as ``condition()`` holds (polling), failing if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the pull ended before it could be killed (rc {proc.returncode}): {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the pull never reached the point where it should be killed")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def test_kill_mid_file_then_resume(env, hub, cli, files):
    data = files["big"]
    part = cache_repo(env, BIG) / "blobs" / f"{sha(data)}.incomplete"
    hub.rate = 2_000_000  # bytes/s: the 3 MB file takes ~1.5 s, so the kill lands mid-file
    proc = spawn(env, "pull", BIG, "-q")
    kill_when(proc, lambda: size_of(part) >= 600_000)
    kept = size_of(part)
    served_before = hub.stats.served[BIG_FILE]
    assert 600_000 <= kept < len(data) and served_before >= kept

    # nothing looks complete
    assert not (cache_repo(env, BIG) / "blobs" / sha(data)).exists()
    assert not (cache_repo(env, BIG) / "snapshots").exists()
    with pytest.raises(ModelError, match="only partly downloaded"):
        resolve_model(BIG)
    models = cli("models").stdout
    assert any(ln.startswith(BIG) and "partial" in ln for ln in models.splitlines()), models

    hub.rate = 0
    hub.reset_stats()
    r = cli("pull", BIG)
    assert r.exit_code == 0, r.all
    assert f"resuming {BIG}" in r.stderr
    assert hub.stats.ranges(BIG_FILE) == [f"bytes={kept}-"]
    assert hub.stats.served[BIG_FILE] == len(data) - kept  # not one byte on disk was fetched again
    path = Path(r.stdout.strip())
    assert sha(path.read_bytes()) == sha(data)
    assert resolve_model(BIG) == path
    assert BIG not in "".join(ln for ln in cli("models").stdout.splitlines() if "partial" in ln)


def test_kill_during_second_shard(env, hub, cli, files):
    blobs = cache_repo(env, SHARDED) / "blobs"
    shard = [files[f"shard{i}"] for i in (1, 2, 3)]
    names = [f"Model-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    hub.rate = 1_500_000
    proc = spawn(env, "pull", SHARDED, "-q")
    kill_when(proc, lambda: size_of(blobs / f"{sha(shard[1])}.incomplete") >= 100_000)
    kept = size_of(blobs / f"{sha(shard[1])}.incomplete")
    assert (blobs / sha(shard[0])).is_file()  # the first shard was finished and kept

    hub.rate = 0
    hub.reset_stats()
    r = cli("pull", SHARDED, "-q")
    assert r.exit_code == 0, r.all
    assert names[0] not in hub.stats.served
    assert hub.stats.served[names[1]] == len(shard[1]) - kept
    assert hub.stats.served[names[2]] == len(shard[2])
    first = Path(r.stdout.strip())
    for name, data in zip(names, shard, strict=True):
        assert sha((first.parent / name).read_bytes()) == sha(data)


def test_kill_between_rename_and_link(env, hub, cli, files):
    """A blob renamed into place but never linked (killed in between) is reused, not fetched again."""
    r = cli("pull", "llada-8b-instruct", "-q")
    link = Path(r.stdout.strip())
    link.unlink()
    (cache_repo(env, "mradermacher/LLaDA-8B-Instruct-GGUF") / "refs" / "main").unlink()
    with pytest.raises(ModelError, match="not downloaded"):
        resolve_model("llada-8b-instruct")
    hub.reset_stats()
    r = cli("pull", "llada-8b-instruct", "-q")
    assert r.exit_code == 0 and Path(r.stdout.strip()) == link and link.is_file()
    assert hub.stats.count("/cdn") == 0 and hub.stats.count("/mradermacher") == 0


def test_kill_after_last_byte_before_rename(env, hub, cli, files):
    """A complete .incomplete (killed before the rename) is checked and renamed: no bytes fetched."""
    data = files["llada_q4"]
    blobs = cache_repo(env, "mradermacher/LLaDA-8B-Instruct-GGUF") / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha(data)}.incomplete").write_bytes(data)
    r = cli("pull", "llada-8b-instruct", "-q")
    assert r.exit_code == 0, r.all
    assert hub.stats.served_total() == 0
    assert (blobs / sha(data)).is_file() and not (blobs / f"{sha(data)}.incomplete").exists()


def test_garbage_in_incomplete_is_caught_by_the_checksum(env, hub, cli, files):
    data = files["llada_q4"]
    blobs = cache_repo(env, "mradermacher/LLaDA-8B-Instruct-GGUF") / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha(data)}.incomplete").write_bytes(b"\0" * 1000)
    r = cli("pull", "llada-8b-instruct")
    assert r.exit_code == 1 and "failed its sha256 check and was deleted" in r.stderr
    r = cli("pull", "llada-8b-instruct", "-q")
    assert r.exit_code == 0 and Path(r.stdout.strip()).read_bytes() == data


class _StopAfter(PullProgress):
    def __init__(self, limit):
        self.limit, self.seen = limit, 0

    def advance(self, n):
        self.seen += n
        if self.seen >= self.limit:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_bytes(env, hub, files):
    ref = parse_spec(BIG)
    with pytest.raises(PullInterrupted) as err:
        pull(ref, progress=_StopAfter(500_000))
    assert err.value.exit_code == 130
    assert f"kept, run 'dlm pull {BIG}' to resume" in str(err.value)
    part = cache_repo(env, BIG) / "blobs" / f"{sha(files['big'])}.incomplete"
    kept = part.stat().st_size
    hub.reset_stats()
    result = pull(ref)
    assert result.reused == kept and result.downloaded == len(files["big"]) - kept
    assert hub.stats.served[BIG_FILE] == len(files["big"]) - kept


def test_real_ctrl_c_mid_file_exits_130_keeps_the_bytes_and_resumes(env, hub, cli, files):
    """SIGINT to a running `dlm pull`: exit 130 with one line, nothing looks complete, the next pull resumes."""
    import subprocess
    import sys

    from .conftest import subprocess_env

    data = files["big"]
    blobs = cache_repo(env, BIG) / "blobs"
    part = blobs / f"{sha(data)}.incomplete"
    hub.rate = 2_000_000  # bytes/s: the 3 MB file takes ~1.5 s, so the signal lands mid-file
    from ..conftest import sigint_default

    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "pull", BIG, "-q"], env=subprocess_env(env),
                            preexec_fn=sigint_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while size_of(part) < 600_000:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the pull never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"dlm pull {BIG}" in lines[0], lines
    kept = size_of(part)
    assert 600_000 <= kept < len(data)
    assert not (blobs / sha(data)).exists() and not (cache_repo(env, BIG) / "snapshots").exists()

    hub.rate = 0
    r = cli("pull", BIG)
    assert r.exit_code == 0, r.all
    assert sha(Path(r.stdout.strip()).read_bytes()) == sha(data)
