"""The live view in a real terminal: tmux runs dlm, the test reads the screen as a person would."""

from __future__ import annotations

import os
import signal
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dlmcli.hub import BUNDLED_DIR
from dlmcli.render.picture import Run
from dlmcli.render.text import MASK_GLYPH
from dlmcli.render.trace import read_trace

from .conftest import ROOT

pytestmark = [pytest.mark.slow,  # a real terminal: seconds per test
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")]


class Tmux:
    """One private tmux server (its own socket), one session running one shell script."""

    def __init__(self, tmp: Path, width: int = 100, height: int = 30):
        self.socket = f"dlm-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp, self.width, self.height = tmp, width, height

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=True).stdout

    def start(self, dlm_args: list, stdout: Path | None = None, background: bool = False) -> None:
        env = f"PYTHONPATH={shlex.quote(str(ROOT))} HF_HUB_OFFLINE=1"
        cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "dlmcli", *dlm_args])
        if stdout is not None:
            cmd += f" > {shlex.quote(str(stdout))}"
        script = self.tmp / "run.sh"
        # 'trap : INT': the shell outlives a Ctrl-C sent to dlm (a handler, unlike '', is not inherited).
        # background: dlm's pid goes to ./pid, for a test that signals it (SIGTERM has no key).
        run = f"{env} {cmd} & echo $! > pid; wait $!" if background else f"{env} {cmd}"
        # pytest exports COLUMNS=80 and LINES=24, which Rich would take over the pane's real size.
        script.write_text(f"trap : INT\nunset COLUMNS LINES\ncd {shlex.quote(str(self.tmp))}\n{run}\n"
                          f"echo $? > rc\nsleep 60\n")
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(self.width), "-y", str(self.height),
                  f"sh {shlex.quote(str(script))}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def rc(self, timeout: float = 20) -> int:
        path = self.tmp / "rc"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if path.exists() and path.read_text().strip():
                return int(path.read_text())
            time.sleep(0.1)
        raise AssertionError(f"dlm did not finish in {timeout}s; screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def term(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.close()


@pytest.fixture(scope="module")
def model(gguf_dir):
    """tiny-llada when bundled (a real answer to look for), else the random llada fixture."""
    if (BUNDLED_DIR / "tiny-llada.gguf").is_file():
        return ["-m", "tiny-llada", "-n", "32"], "reverse abcdefghij", "jihgfedcba"
    return ["-m", str(gguf_dir / "llada.gguf"), "-n", "32", "--block-length", "8"], "reverse abc", None


def masks_on(screen: str) -> int:
    """Mask placeholders in the canvas: the lines between the title and the block schedule."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dlm · "))
    end = next(i for i, line in enumerate(lines) if line.startswith("blocks ") and i > start)
    return "".join(lines[start + 1:end]).count(MASK_GLYPH)


def test_screen_changes_while_masks_resolve_and_ends_on_the_answer(term, model, tmp_path):
    args, prompt, expected = model
    out = tmp_path / "answer.txt"
    term.start(["generate", *args, "--visual", "--delay", "0.15", "--trace", "run.jsonl", prompt], stdout=out)
    counts, screens = [], []
    end = time.monotonic() + 20
    while time.monotonic() < end and not (tmp_path / "rc").exists():
        s = term.screen()
        if "dlm · " in s and "\nblocks " in s:
            screens.append(s)
            counts.append(masks_on(s))
        time.sleep(0.25)
    assert term.rc() == 0
    final = term.screen()
    # The view was there from the top of the screen: nothing (no native log) came before it.
    assert final.splitlines()[0].startswith("dlm · ")
    assert len(set(screens)) >= 4, "the screen did not change while the run went on"
    assert counts == sorted(counts, reverse=True) and len(set(counts)) >= 3 and counts[0] > 0
    assert masks_on(final) == 0 and "done · " in final
    # The last frame shows the answer: the canvas as drawn from the trace.
    trace = read_trace(tmp_path / "run.jsonl")
    run = Run.of(trace)
    answer_glyphs = "".join(run.glyph(int(t)) for t in trace.end["tokens"])
    assert answer_glyphs in final.replace("\n", "")
    if expected:
        assert expected in final
    # stdout (a file here) is exactly the answer, no escape codes.
    assert out.read_bytes() == (trace.end["text"] + "\n").encode()
    assert b"\x1b[" not in out.read_bytes() or "\x1b[" in trace.end["text"]


def test_a_resize_mid_run_is_survived(term, model, tmp_path):
    args, prompt, _ = model
    term.start(["generate", *args, "--visual", "--delay", "0.1", prompt])
    time.sleep(1.2)
    term.tmux("resize-window", "-t", "t", "-x", "44", "-y", "16")
    time.sleep(0.6)
    narrow = term.screen()
    assert all(len(line) <= 44 for line in narrow.splitlines())
    term.tmux("resize-window", "-t", "t", "-x", "120", "-y", "30")
    assert term.rc() == 0
    final = term.screen()
    assert "done · " in final and "Traceback" not in final


def test_sigterm_exits_143_and_gives_the_terminal_back(term, model, tmp_path):
    args, prompt, _ = model
    term.start(["generate", *args, "--visual", "--delay", "0.2", prompt], background=True)
    end = time.monotonic() + 10
    while "step " not in term.screen() and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGTERM)
    assert term.rc() == 143
    screen = term.screen()
    assert "Terminated." in screen and "stopped" in screen and "Traceback" not in screen
    assert term.tmux("display-message", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"  # cursor shown


def test_ctrl_c_exits_130_and_gives_the_terminal_back(term, model, tmp_path):
    args, prompt, _ = model
    term.start(["generate", *args, "--visual", "--delay", "0.2", prompt])
    end = time.monotonic() + 10
    while "step " not in term.screen() and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    term.tmux("send-keys", "-t", "t", "C-c")
    assert term.rc() == 130
    screen = term.screen()
    assert "Interrupted." in screen and "stopped" in screen and "Traceback" not in screen
    assert term.tmux("display-message", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"  # cursor shown
