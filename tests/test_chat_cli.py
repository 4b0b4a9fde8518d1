"""`dlm chat` with stdin piped: each line a turn, only answers on stdout, commands and errors in one line each."""

from __future__ import annotations

import io
import json

import pytest

from dlmcli.errors import DlmError
from dlmcli.hub import BUNDLED_DIR

from .conftest import run_dlm

needs_tiny = pytest.mark.skipif(not (BUNDLED_DIR / "tiny-llada.gguf").is_file(), reason="bundled tiny-llada missing")


@pytest.fixture(scope="module")
def small(gguf_dir):
    """The random llada (context 128, one token per character) with settings that fit it."""
    return ["chat", "-m", gguf_dir / "llada.gguf", "-n", "16", "--block-length", "16", "-s", "4"]


@needs_tiny
def test_piped_lines_are_turns_and_only_answers_reach_stdout():
    from dlmcli import Conversation, load

    r = run_dlm("chat", "-m", "tiny-llada", input=b"reverse abc\nadd 1 2\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    with load("tiny-llada") as m:  # the same conversation through the API
        conv = Conversation(m)
        expected = [conv.send("reverse abc").text, conv.send("add 1 2").text]
    assert expected[0] == "cba"
    assert r.stdout.decode().splitlines() == expected


@needs_tiny
def test_piped_commands_change_the_next_turns(tmp_path):
    script = f"/set steps 4\n/system be brief\n\nreverse hello\n/save {tmp_path / 'c.json'}\n/exit\nreverse abc\n"
    r = run_dlm("chat", "-m", "tiny-llada", input=script.encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"olleh\n"  # /exit: the last line is never sent
    err = r.stderr.decode()
    assert "steps = 4" in err and "System prompt set." in err
    assert json.loads((tmp_path / "c.json").read_text()) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "reverse hello"},
        {"role": "assistant", "content": "olleh"}]


@pytest.mark.parametrize("script,code,message", [
    (b"/bogus\n", 2, "Error: stdin line 1: unknown command /bogus; /help lists the commands"),
    (b"hi\n" + b"y" * 200 + b"\n", 1, "Error: stdin line 2: this message does not fit: it takes"),
    (b"hi\n\xff\n", 1, "Error: stdin line 2 is not valid UTF-8 (byte 0)"),
])
def test_a_bad_line_stops_a_piped_chat_with_one_line(small, script, code, message):
    r = run_dlm(*small, input=script)
    assert r.returncode == code
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert len(r.stdout.decode().splitlines()) == script.count(b"hi\n")  # answers before the bad line


@pytest.fixture
def session(llada):
    from dlmcli.chat import ChatSession
    from dlmcli.conversation import Conversation

    conv = Conversation(llada, gen_length=16, block_length=16, steps=4)
    return ChatSession(conv, visual=False, delay=0.0, verbose=False, interactive=False)


@pytest.mark.parametrize("line,error", [
    ("/set steps many", "steps must be a whole number (got 'many')"),
    ("/set steps 0", "steps must be between 1 and 1048576 (got 0)"),  # named as /set names it
    ("/set colour red", "unknown setting 'colour'; one of: gen_length, steps"),
    ("/set steps", "usage: /set KEY VALUE"),
    ("/set delay -1", "delay must be between 0 and"),
    ("/set early-stop maybe", "early_stop must be on or off (got 'maybe')"),
    ("/load /nonexistent/c.json", "cannot read /nonexistent/c.json: No such file"),
    ("/save /nonexistent/c.json", "cannot write /nonexistent/c.json: No such file"),
    ("/save", "usage: /save FILE"),
])
def test_bad_commands_raise_one_error_and_change_nothing(session, line, error):
    before = (session.conv.params(), session.delay, session.conv.messages)
    with pytest.raises(DlmError) as e:
        session.handle(line)
    assert str(e.value).startswith(error)
    assert (session.conv.params(), session.delay, session.conv.messages) == before


def test_set_accepts_flag_spellings_and_default(session, capsys):
    session.handle("/set --gen-length 32")
    session.handle("/set block-length 8")
    session.handle("/set early_stop off")
    session.handle("/set delay 0.5")
    p = session.conv.params()
    assert (p.gen_length, p.block_length, p.early_stop, session.delay) == (32, 8, False, 0.5)
    session.handle("/set block_length default")
    default = session.model.params(gen_length=32, steps=4).block_length
    assert session.conv.params().block_length == default and "block_length" not in session.conv.overrides
    session.handle("/show")
    err = capsys.readouterr().err
    assert "gen_length = 32" in err and f"block_length = {default}" in err
    assert "gen_length   32\n" in err and "early_stop   off\n" in err and "seed         random  (default)" in err


def test_bad_flags_fail_before_any_turn(small):
    r = run_dlm(*small, "--temperature", "-1", input=b"hello\n")
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().startswith("Error: --temperature must be 0 or")


def test_a_long_piped_conversation_drops_its_oldest_turns(small, tmp_path):
    lines = [f"message {i} " + "z" * 20 for i in range(6)]
    save = tmp_path / "c.json"
    r = run_dlm(*small, input=("\n".join(lines) + f"\n/save {save}\n").encode())
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.decode().split("\n")) - 1 >= 6  # at least one line per answer
    notes = [line for line in r.stderr.decode().splitlines() if "outgrew" in line]
    assert notes and all(line.startswith("The conversation outgrew the context of 128 tokens: dropped the oldest")
                         for line in notes)
    kept = [m["content"] for m in json.loads(save.read_text()) if m["role"] == "user"]
    assert kept[-1] == lines[-1] and lines[0] not in kept


def test_load_save_and_a_leading_double_slash(session, tmp_path, capsys):
    conv = tmp_path / "in.json"
    conv.write_text(json.dumps({"messages": [{"role": "system", "content": "S"},
                                             {"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}))
    out = tmp_path / "out.json"
    session.piped(io.BytesIO(f"/load {conv}\n//slash\n/save {out}\n".encode()))
    saved = json.loads(out.read_text())
    assert saved[:3] == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a"}]
    assert saved[3] == {"role": "user", "content": "/slash"} and saved[4]["role"] == "assistant"
    assert capsys.readouterr().out == saved[4]["content"] + "\n"
    bad = tmp_path / "bad.json"
    for text, error in [('[{"role": "user", "content": 3}]',
                         "stdin line 1: messages[0].content must be a string or a list of text parts (got int)"),
                        ("[{", "stdin line 1: "), (b"\xff", "stdin line 1: ")]:
        bad.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DlmError) as e:
            session.piped(io.BytesIO(f"/load {bad}\n".encode()))
        assert str(e.value).startswith(error)
        assert json.loads(out.read_text()) == session.conv.messages  # unchanged by a bad file


def test_empty_stdin_is_an_empty_conversation(small):
    r = run_dlm(*small, input=b"")
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""


def test_answers_shown_on_a_terminal_cannot_drive_it():
    from dlmcli.chat import printable

    assert printable("line one\n\tline two") == "line one\n\tline two"
    assert printable("a\x1b[2Jb\x07c\u202ed\x9b") == "a\\x1b[2Jb\\x07c\\u202ed\\x9b"
