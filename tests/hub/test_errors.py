"""Every failure of a pull is one clear line, leaves nothing that looks complete, and never shows HF_TOKEN."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from dlmcli.errors import ModelError
from dlmcli.hub import download, resolve_model

from .conftest import BIG, GATED, LLADA, NOGGUF, PARTS, TOKEN, cache_repo, closed_port

BIG_FILE = "Big.Q4_K_M.gguf"


def error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def nothing_linked(env, repo) -> bool:
    snaps = cache_repo(env, repo) / "snapshots"
    return not snaps.exists() or not any(p.is_file() for p in snaps.rglob("*"))


def test_gated_without_token(env, hub, cli):
    r = cli("pull", GATED)
    assert r.exit_code == 1
    assert error_line(r) == (
        f"Error: {GATED} is gated: accept its terms at {hub.url}/{GATED}, then set HF_TOKEN (or run 'hf auth login')"
    )
    assert not cache_repo(env, GATED).exists()  # no trace, and nothing `dlm models` would list as partial
    assert GATED not in cli("models").stdout


def test_gated_with_a_token_without_access(env, hub, cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_someoneelse_000000000000")
    r = cli("pull", GATED)
    assert (
        error_line(r)
        == f"Error: {GATED} is gated and your HF_TOKEN has no access; accept its terms at {hub.url}/{GATED}"
    )
    assert "hf_someoneelse" not in r.all


def test_gated_with_access_works(env, hub, cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = cli("pull", GATED, "-q")
    assert r.exit_code == 0, r.all
    assert Path(r.stdout.strip()).is_file()


def test_missing_repo(env, hub, cli):
    r = cli("pull", "nobody/Nothing-GGUF")
    assert error_line(r) == (
        f"Error: repo nobody/Nothing-GGUF not found on {hub.url} (check the name, or set HF_TOKEN if it is private)"
    )
    assert not cache_repo(env, "nobody/Nothing-GGUF").exists()


@pytest.mark.parametrize(
    ("repo", "message"),
    [
        (PARTS, f"Error: {PARTS} only has GGUFs split into .partXofY pieces"),
        (NOGGUF, f"Error: {NOGGUF} has no GGUF files"),
    ],
)
def test_repos_without_a_usable_gguf(env, hub, cli, repo, message):
    assert error_line(cli("pull", repo)).startswith(message)


def test_no_network(env, hub, cli, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    r = cli("pull", "llada-8b-instruct")
    line = error_line(r)
    assert line.startswith(f"Error: cannot reach {url} (") and line.endswith(
        "check the network (or HF_ENDPOINT), then run 'dlm pull llada-8b-instruct' again"
    )
    assert "HF_HUB_OFFLINE" not in line  # it cannot help a pull


def test_not_enough_space_is_caught_before_downloading(env, hub, cli, monkeypatch):
    monkeypatch.setattr(download, "_free_bytes", lambda path: 500)
    r = cli("pull", BIG)
    assert error_line(r).startswith(f"Error: not enough disk space for {BIG}: needs 3.1 MB more, 500 B free in ")
    assert hub.stats.count("/cdn") == 0
    assert [row for row in cli("models", "--json").stdout.split('"name"') if BIG in row] == []


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written, like a full filesystem."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real.write(bytes(data[: self.room]))
        self.room -= n
        return n

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request, env, tmp_path, monkeypatch):
    """HF_HOME on a real 1 MB tmpfs (needs root and mount), or writes made to fail with ENOSPC past 1 MB.
    Returns a function that makes room again."""
    home = Path(env["HF_HOME"])
    home.mkdir(parents=True)
    mounted = False
    if request.param == "tmpfs":
        mounted = (
            os.geteuid() == 0
            and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home)], capture_output=True
            ).returncode
            == 0
        )
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (not root?); the injected variant covers ENOSPC")
    if mounted:

        def grow():
            subprocess.run(["mount", "-o", "remount,size=16m", str(home)], check=True)
    else:
        real_open = open

        def fake_open(path, mode="r", *a, **kw):
            f = real_open(path, mode, *a, **kw)
            return _FullDisk(f, 1 << 20) if str(path).endswith(".incomplete") and "b" in mode else f

        monkeypatch.setattr(download, "open", fake_open, raising=False)

        def grow():
            monkeypatch.delattr(download, "open", raising=False)

    # the free-space check before downloading would refuse; this is about running out midway
    monkeypatch.setattr(download, "_free_bytes", lambda path: 1 << 40)
    yield grow
    if mounted:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_disk_full_midway_then_resume(env, hub, cli, small_disk, files):
    r = cli("pull", BIG)
    line = error_line(r)
    assert line.startswith(f"Error: disk full while writing {BIG_FILE} (") and line.endswith(
        f"free some space and run 'dlm pull {BIG}' to resume"
    )
    repo = cache_repo(env, BIG)
    parts = list((repo / "blobs").glob("*.incomplete"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(files["big"])
    assert [p for p in (repo / "blobs").iterdir() if not p.name.endswith(".incomplete")] == []
    assert nothing_linked(env, BIG)
    with pytest.raises(ModelError, match=rf"only partly downloaded \(\d+%\); run 'dlm pull {BIG}' to resume"):
        resolve_model(BIG)
    kept = parts[0].stat().st_size

    small_disk()
    hub.reset_stats()
    r = cli("pull", BIG, "-q")
    assert r.exit_code == 0, r.all
    assert hub.stats.ranges(BIG_FILE) == [f"bytes={kept}-"]
    assert hub.stats.served[BIG_FILE] == len(files["big"]) - kept
    assert Path(r.stdout.strip()).read_bytes() == files["big"]


def test_another_pull_of_the_same_file_is_refused(env, hub, cli, files):
    import hashlib

    from filelock import FileLock

    sha = hashlib.sha256(files["llada_q4"]).hexdigest()
    lock = Path(env["HF_HOME"]) / "hub" / ".locks" / cache_repo(env, LLADA).name / f"{sha}.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)):
        r = cli("pull", "llada-8b-instruct")
    assert error_line(r) == (
        "Error: another process is downloading LLaDA-8B-Instruct.Q4_K_M.gguf; wait for it to "
        "finish, then run 'dlm pull llada-8b-instruct'"
    )


def test_token_never_shown(env, hub, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    outputs = []
    for args in (
        ["pull", GATED],
        ["pull", "llada-8b-instruct"],
        ["models"],
        ["info", GATED],
        ["info", GATED, "--json"],
        ["pull", "nobody/Nothing-GGUF"],
        ["pull", "llada-8b-instruct:Q5_K_S"],
        ["rm", "-y", GATED],
    ):
        outputs.append(cli(*args).all)
    hub.corrupt.add("Gated.Q4_K_M.gguf")
    outputs.append(cli("pull", GATED).all)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    outputs.append(cli("pull", "dream-7b-instruct").all)
    for text in outputs:
        assert TOKEN not in text and TOKEN[3:] not in text
    # the token went to the Hub API and resolve endpoints, never to the CDN host
    api = [q for q in hub.stats.requests if not q.path.startswith("/cdn/")]
    cdn = [q for q in hub.stats.requests if q.path.startswith("/cdn/")]
    assert api and all(q.authorization == f"Bearer {TOKEN}" for q in api)
    assert cdn and all(q.authorization is None and q.host.startswith("localhost") for q in cdn)


def test_scrub_removes_token_from_foreign_text(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert download.scrub(f"GET https://x/?t={TOKEN} failed") == "GET https://x/?t=*** failed"
