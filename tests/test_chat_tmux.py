"""`dlm chat` in a real terminal: tmux runs it, the test types as a person would and reads the screen."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from dlmcli.hub import BUNDLED_DIR
from dlmcli.render.text import MASK_GLYPH

from .test_live_tmux import Tmux

pytestmark = [
    pytest.mark.slow,  # a real terminal: seconds per test
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"),
    pytest.mark.skipif(not (BUNDLED_DIR / "tiny-llada.gguf").is_file(), reason="bundled tiny-llada missing"),
]


class Chat(Tmux):
    def wait_for(self, check, timeout: float = 20, what: str = "") -> str:
        """Poll the screen until CHECK (a string on it, or a predicate) holds; return that screen."""
        end = time.monotonic() + timeout
        while True:
            s = self.screen()
            if (check in s) if isinstance(check, str) else check(s):
                return s
            if time.monotonic() > end:
                raise AssertionError(f"waited {timeout}s for {what or check!r}; screen:\n{s}")
            time.sleep(0.1)

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        self.send("Enter")

    def cursor_shown(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"


def at_prompt(screen: str) -> bool:
    """The last line with text is an empty prompt."""
    lines = [line for line in screen.splitlines() if line.strip()]
    return bool(lines) and lines[-1].rstrip() == ">>>"


def live_view_on(screen: str) -> bool:
    return "dlm · tiny-llada" in screen and "\nblocks " in screen


@pytest.fixture
def chat(tmp_path):
    t = Chat(tmp_path)
    yield t
    t.close()


def ask(chat: Chat, text: str, *, watch: bool = True) -> str:
    """Type TEXT, see the live view while it denoises (if WATCH), wait for the prompt; return the screen."""
    chat.type(text)
    if watch:
        chat.wait_for(live_view_on, what="the live view")
    time.sleep(0.2)
    return chat.wait_for(lambda s: at_prompt(s) and not live_view_on(s), what="the prompt after the answer")


def test_a_conversation_in_the_terminal(chat, tmp_path):
    chat.start(["chat", "-m", "tiny-llada", "--delay", "0.1"])
    chat.wait_for(at_prompt, what="the first prompt")
    assert "Chatting with tiny-llada" in chat.screen()

    screen = ask(chat, "reverse hello")
    lines = screen.splitlines()
    assert "olleh" in [line.strip() for line in lines]  # the answer stays, as plain text
    assert MASK_GLYPH not in screen and "blocks " not in screen  # the live view is gone

    screen = ask(chat, "add 1 2")
    chat.type(f"/save {tmp_path / 'conv.json'}")
    chat.wait_for("Saved 4 messages")
    # The second turn's prompt held the first: the conversation is both exchanges (tests/test_chat_api.py
    # checks the prompt tokens themselves). No claim about the second answer: the tiny models know single turns.
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert saved[:3] == [{"role": "user", "content": "reverse hello"}, {"role": "assistant", "content": "olleh"},
                         {"role": "user", "content": "add 1 2"}]
    assert saved[3]["role"] == "assistant" and saved[3]["content"] in [line.strip() for line in screen.splitlines()]

    # /set changes the steps of the next turn: the live view counts to 4.
    chat.type("/set steps 4")
    chat.wait_for("steps = 4")
    chat.send("C-l")  # clear the screen, so only the next turn's view is read
    chat.type("reverse abc")
    chat.wait_for(lambda s: "step 1/4" in s or "step 2/4" in s, what="a 4-step run")
    chat.wait_for(lambda s: at_prompt(s) and not live_view_on(s))
    chat.type("/show")
    shown = chat.wait_for("conversation ")
    assert "steps        4\n" in shown and "temperature  0.0  (default)" in shown

    chat.type("/bogus")
    chat.wait_for("Error: unknown command /bogus; /help lists the commands")
    chat.type("/set steps many")
    chat.wait_for("Error: steps must be a whole number (got 'many')")

    chat.send("C-d")
    assert chat.rc() == 0
    assert "Traceback" not in chat.screen() and chat.cursor_shown()


def test_ctrl_c_cancels_the_turn_and_the_conversation_goes_on(chat, tmp_path):
    chat.start(["chat", "-m", "tiny-llada", "--delay", "0.3"])
    chat.wait_for(at_prompt)
    chat.type("reverse hello")
    chat.wait_for("step 2/", what="the turn under way")
    chat.send("C-c")
    screen = chat.wait_for("Cancelled; the conversation is as it was.")
    assert not live_view_on(screen) and MASK_GLYPH not in screen and "olleh" not in screen
    assert chat.cursor_shown()

    chat.wait_for(at_prompt)
    chat.tmux("send-keys", "-t", "t", "-l", "half typed")
    chat.wait_for(">>> half typed")
    chat.send("C-c")  # with text on the line: the line is dropped, no hint
    chat.wait_for(lambda s: s.count(">>>") >= 3)
    screen = ask(chat, "reverse abc")
    assert "cba" in [line.strip() for line in screen.splitlines()]
    chat.type(f"/save {tmp_path / 'c.json'}")
    chat.wait_for("Saved 2 messages")
    assert [m["content"] for m in json.loads((tmp_path / "c.json").read_text())] == ["reverse abc", "cba"]

    chat.send("C-c")  # at an empty prompt: says how to leave
    chat.wait_for("(to leave, type /exit or press Ctrl-D)")
    chat.type("/exit")
    assert chat.rc() == 0
    assert "Traceback" not in chat.screen() and chat.cursor_shown()


def test_a_40_column_terminal(tmp_path):
    chat = Chat(tmp_path, width=40, height=16)
    try:
        chat.start(["chat", "-m", "tiny-llada", "--delay", "0.1"])
        chat.wait_for(at_prompt)
        chat.type("reverse abcdefghij")
        during = chat.wait_for(live_view_on)
        assert all(len(line) <= 40 for line in during.splitlines())
        screen = chat.wait_for(lambda s: at_prompt(s) and not live_view_on(s))
        assert "jihgfedcba" in [line.strip() for line in screen.splitlines()]
        # A message longer than the line wraps and is still one message; this one also outgrows the context.
        chat.type("reverse " + "x" * 50)
        chat.wait_for(lambda s: at_prompt(s) and not live_view_on(s) and "x" * 12 in s)
        chat.send("C-d")
        assert chat.rc() == 0
        history = chat.tmux("capture-pane", "-p", "-t", "t", "-S", "-200")  # scrollback included
        assert all(len(line) <= 40 for line in history.splitlines())
        assert "dlm · " not in history and MASK_GLYPH not in history  # each view was erased whole
        assert "dropped the oldest 1 exchange" in history.replace("\n", "")
        assert chat.cursor_shown()
    finally:
        chat.close()


def test_multi_line_input(chat, tmp_path):
    chat.start(["chat", "-m", "tiny-llada", "--no-visual"])
    chat.wait_for(at_prompt)
    chat.tmux("send-keys", "-t", "t", "-l", "first line")
    chat.send("Escape", "Enter")
    chat.tmux("send-keys", "-t", "t", "-l", "second\\")
    chat.send("Enter")
    chat.tmux("send-keys", "-t", "t", "-l", "third")
    screen = chat.wait_for("third")
    assert "... second" in screen
    chat.send("Enter")
    chat.wait_for(lambda s: s.count(">>>") >= 2)
    chat.type(f"/save {tmp_path / 'm.json'}")
    chat.wait_for("Saved 2 messages")
    assert json.loads((tmp_path / "m.json").read_text())[0]["content"] == "first line\nsecond\nthird"
    chat.send("C-d")
    assert chat.rc() == 0
