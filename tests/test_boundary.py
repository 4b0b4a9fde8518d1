"""One error boundary for every command: those of the main app, the config sub-app, and any command
registered later, with nothing else to do than register it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .conftest import ROOT, run_dlm, sigint_default


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **extra)


def test_unwritable_config_dir_is_one_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the config directory should be: no user (root included) can mkdir it
    r = run_dlm("config", "set", "model", "tiny-llada", env={"DLM_CONFIG": str(blocker / "dlm" / "config.toml")})
    err = r.stderr.decode()
    assert r.returncode == 1 and b"Traceback" not in r.stderr, err
    assert err.startswith("Error: cannot write config file ") and err.count("\n") == 1
    assert "DLM_CONFIG" in err


def test_ctrl_c_in_a_config_command_is_interrupted_130(tmp_path):
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)  # reading the config blocks until we let it go: a Ctrl-C lands mid-command
    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "config", "get", "model"], env=_env(DLM_CONFIG=str(fifo)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_default)
    deadline = time.monotonic() + 30
    while True:  # opening the write end succeeds once the command has the file open for reading
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never read its config"
            time.sleep(0.01)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    assert (proc.returncode, out, err) == (130, b"", b"Interrupted.\n")


NEW_COMMAND = """
import sys
sys.argv[0] = "dlm"
from dlmcli.cli import app, main
from dlmcli.errors import UsageError

@app.command()
def boom(what: str):
    if what == "error":
        raise UsageError("boom went wrong; do something else")
    raise KeyboardInterrupt

main()
"""


def test_a_newly_registered_command_gets_the_boundary():
    r = subprocess.run([sys.executable, "-c", NEW_COMMAND, "boom", "error"], capture_output=True, env=_env(),
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (2, b"", b"Error: boom went wrong; do something else\n")
    r = subprocess.run([sys.executable, "-c", NEW_COMMAND, "boom", "ctrl-c"], capture_output=True, env=_env(),
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (130, b"", b"Interrupted.\n")


BROKEN_IMPORT = """
import sys
sys.argv[0] = "dlm"
sys.modules["dlmcli.hub.commands"] = None  # importing it now raises ImportError, as a broken module would
from dlmcli.cli import main
main()
"""


def test_a_broken_import_is_a_bug_not_missing_commands():
    r = subprocess.run([sys.executable, "-c", BROKEN_IMPORT, "models"], capture_output=True, env=_env(),
                       timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" in err and "dlmcli.hub.commands" in err and "No such command" not in err
