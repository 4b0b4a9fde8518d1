"""Model commands as a new user meets them (issue 15): rm without a terminal, hints that fit the command,
a default model whose errors say where it came from, pull --revision."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from .conftest import LLADA, subprocess_env


def _dlm(env, *args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "dlmcli", *args], input=stdin, capture_output=True,
                          env=subprocess_env(env), timeout=120)


def test_rm_without_a_terminal_refuses_unless_yes(env, hub, cli):
    path = Path(cli("pull", "llada-8b-instruct", "-q").stdout.strip())
    r = _dlm(env, "rm", "llada-8b-instruct", stdin=b"n\n")  # `echo n | dlm rm ...` used to delete it
    assert r.returncode == 2 and path.is_file()
    assert r.stderr.decode().strip().splitlines() == [
        "Error: dlm rm asks before deleting and stdin is not a terminal; pass -y to remove llada-8b-instruct "
        f"({r.stderr.decode().split('(')[1].split(')')[0]})"]
    assert _dlm(env, "rm", "-y", "llada-8b-instruct").returncode == 0 and not path.exists()


def test_rm_answered_no_at_the_prompt_keeps_the_model(env, hub, cli):
    path = Path(cli("pull", "llada-8b-instruct", "-q").stdout.strip())
    master, slave = pty.openpty()  # a real terminal for stdin, stdout and stderr
    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "rm", "llada-8b-instruct"], stdin=slave, stdout=slave,
                            stderr=slave, env=subprocess_env(env), close_fds=True)
    os.close(slave)
    out = b""
    while b"?" not in out:
        out += os.read(master, 1024)
    os.write(master, b"n\n")
    proc.wait(timeout=60)
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode()
    assert proc.returncode == 1 and path.is_file()
    assert "Remove llada-8b-instruct (" in text and "kept llada-8b-instruct; nothing removed" in text
    assert "Aborted" not in text


def test_info_of_a_model_not_pulled_does_not_advise_a_flag_it_lacks(env, hub, cli):
    r = cli("info", "llada-8b-instruct")  # a catalog name: described from the catalog
    assert r.exit_code == 0 and "'dlm pull llada-8b-instruct' fetches it" in r.stdout and "--pull" not in r.stdout
    r = cli("info", "someone/other-GGUF")  # a repo dlm knows nothing of
    assert r.exit_code == 1 and "run 'dlm pull someone/other-GGUF'" in r.stderr and "--pull" not in r.stderr


def test_config_set_model_stores_an_absolute_path(env, hub, cli, tmp_path, monkeypatch):
    d = tmp_path / "work"
    d.mkdir()
    (d / "tinyd.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(d)
    r = cli("config", "set", "model", "./tinyd.gguf")
    assert r.exit_code == 0, r.all
    monkeypatch.chdir(tmp_path)
    assert cli("config", "get", "model").stdout.strip() == str(d / "tinyd.gguf")


def test_errors_of_a_default_model_name_their_source(env, hub, cli):
    r = _dlm({**env, "DLM_MODEL": "nosuch"}, "generate", "hi")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("Error: unknown model nosuch;") and "came from DLM_MODEL" in lines[0]
    cli("config", "set", "model", "owner/nothing-here")
    r = _dlm(env, "generate", "hi")
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and env["DLM_CONFIG"] in lines[0] and "dlm config set model" in lines[0]


def test_pull_revision(env, hub, cli, files):
    commit = hub.repos[LLADA].commit
    r = cli("pull", "llada-8b-instruct", "--revision", commit, "-q")
    assert r.exit_code == 0, r.all
    assert Path(r.stdout.strip()).read_bytes() == files["llada_q4"] and commit in r.stdout
    r = cli("pull", "llada-8b-instruct", "--revision", "no-such-branch")
    assert r.exit_code == 1 and "has no such revision" in r.stderr


def test_notes_on_stderr_are_not_wrapped_off_a_terminal(env, hub, tmp_path):
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "model.gguf"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"GGUF")
    r = _dlm({**env, "COLUMNS": ""}, "config", "set", "model", str(deep))
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 1 and len(lines[0]) > 80 and str(deep) in lines[0]
