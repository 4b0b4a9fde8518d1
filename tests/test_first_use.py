"""First use, as a new user meets it (issue 15): stdin, the documented API imported every way."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from .conftest import ROOT, run_dlm

ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "HF_HUB_OFFLINE": "1"}
DLM = f"{sys.executable} -m dlmcli"


def test_a_prompt_argument_does_not_wait_on_an_idle_stdin():
    # `dlm generate PROMPT < <(sleep 30)`, ssh, cron: stdin is open and never ends. Before, this hung.
    proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "generate", "-m", "tiny-llada", "reverse hello"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        out, err = proc.communicate(timeout=120)  # a hang, not a speed check: stdin is never closed
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0, err
    assert out == b"olleh\n"


def test_a_shell_loop_over_stdin_answers_every_line(tmp_path):
    (tmp_path / "words.txt").write_text("hello\nabc\n")
    script = f'while read w; do {DLM} generate -m tiny-llada "reverse $w"; done < words.txt'
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, env=ENV, timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["olleh", "cba"]


@pytest.mark.slow
def test_piped_stdin_is_ignored_with_a_prompt_and_read_with_dash_or_stdin():
    ignored = run_dlm("generate", "-m", "tiny-llada", "add 1 2", input=b"reverse abc\n")
    assert ignored.returncode == 0 and ignored.stdout == b"3\n", ignored.stderr  # was '3333dd'
    dash = run_dlm("generate", "-m", "tiny-llada", "-", input=b"reverse hello\n")
    assert dash.stdout == b"olleh\n", dash.stderr
    none = run_dlm("generate", "-m", "tiny-llada", input=b"reverse hello\n")
    assert none.stdout == b"olleh\n", none.stderr
    both = run_dlm("generate", "-m", "tiny-llada", "--raw", "--json", "--stdin", "def", input=b"abc\n")
    joined = run_dlm("generate", "-m", "tiny-llada", "--raw", "--json", "abc\n\ndef")
    assert json.loads(both.stdout)["prompt_tokens"] == json.loads(joined.stdout)["prompt_tokens"]
    empty = run_dlm("generate", "-m", "tiny-llada", "-", input=b"")
    assert empty.returncode == 2 and empty.stderr.decode().strip() == "Error: no prompt: stdin is empty"


def test_infill_text_argument_ignores_piped_stdin():
    r = run_dlm("infill", "-m", "tiny-llada", "reverse hello = [MASK:5]", input=b"junk [MASK]\n")
    assert r.returncode == 0 and r.stdout == b"reverse hello = olleh\n", r.stderr


API_CHECK = r"""
import importlib, pkgutil, sys, types
import dlmcli
mode = sys.argv[1]
if mode == "after-other-calls":
    print(dlmcli.generate("reverse hello", model="tiny-llada").text)
    print(dlmcli.infill("reverse hello = [MASK:5]", model="tiny-llada").text)
elif mode == "from-import":
    from dlmcli import infill, generate, load
    print(generate("add 12 30", model="tiny-llada").text)
    print(infill("reverse hello = [MASK:5]", model="tiny-llada").text)
    with load("tiny-llada") as m:
        print(m.infill("reverse [MASK:5] = olleh").result().text)
elif mode == "every-submodule-first":
    # Importing any submodule must not replace a public name (a submodule 'infill' once did).
    for info in pkgutil.walk_packages(dlmcli.__path__, "dlmcli."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    import dlmcli.api as api
    for name in dlmcli.__all__:
        obj = getattr(dlmcli, name)
        assert not isinstance(obj, types.ModuleType), name
        assert callable(obj), name
        if hasattr(api, name):
            assert obj is getattr(api, name), name
    from dlmcli import (load, generate, infill, Model, Generation, Result, Timings, InfillGeneration,
                        InfillResult, FilledSpan, Step, GenerationParams)
    from dlmcli.errors import DlmError, UsageError, ModelError, HubError, GenerationError
    print(infill("reverse hello = [MASK:5]", model="tiny-llada").text)
"""


def _api(mode: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", API_CHECK, mode], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_dlmcli_infill_after_other_calls():
    assert _api("after-other-calls") == ["olleh", "reverse hello = olleh"]


def test_from_dlmcli_import_the_functions():
    assert _api("from-import") == ["42", "reverse hello = olleh", "reverse hello = olleh"]


def test_every_public_name_survives_importing_every_submodule():
    assert _api("every-submodule-first") == ["reverse hello = olleh"]


def _one_error(r, code: int, needle: str) -> None:
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == code and r.stdout == b"", r.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines


@pytest.mark.slow
def test_flags_the_run_would_ignore_are_refused():
    _one_error(run_dlm("generate", "-m", "tiny-llada", "--raw", "--system", "be brief", "hi"), 2,
               "--system goes into the chat template, which --raw skips")
    _one_error(run_dlm("generate", "-m", "tiny-dream", "--block-length", "4", "hi"), 2,
               "--block-length applies to the block schedule, and this run uses --schedule timestep")
    _one_error(run_dlm("generate", "-m", "tiny-llada", "--schedule", "timestep", "--block-length", "4", "hi"), 2,
               "--block-length applies to the block schedule")
    _one_error(run_dlm("generate", "-m", "tiny-llada", "--eps", "0.01", "hi"), 2,
               "--eps applies to the timestep schedule, and this run uses --schedule block")
    _one_error(run_dlm("infill", "-m", "tiny-dream", "--block-length", "2", "a [MASK:3]"), 2,
               "--block-length applies to the block schedule")
    ok = run_dlm("generate", "-m", "tiny-dream", "--eps", "0.01", "add 12 30")
    assert ok.returncode == 0 and ok.stdout == b"42\n", ok.stderr


@pytest.mark.slow
def test_dash_means_stdout_for_traces_and_pictures(tmp_path):
    r = run_dlm("generate", "-m", "tiny-llada", "--trace", "-", "reverse hello")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.decode().splitlines()]  # the trace only, no answer line
    assert records[0]["type"] == "header" and {x["type"] for x in records[1:-1]} == {"step"}
    assert records[-1]["type"] == "end" and records[-1]["text"] == "olleh"
    assert not (ROOT / "-").exists() and not (tmp_path / "-").exists()
    replayed = run_dlm("replay", "-", input=r.stdout)
    assert replayed.returncode == 0 and replayed.stdout == b"olleh\n", replayed.stderr
    svg = run_dlm("replay", "-", "--svg", "-", input=r.stdout)
    assert svg.returncode == 0 and svg.stdout.startswith(b"<?xml") and svg.stdout.endswith(b"</svg>\n")
    html = run_dlm("replay", "-", "--html", "-", input=r.stdout)
    assert html.returncode == 0 and b"<html" in html.stdout[:200].lower()
    _one_error(run_dlm("generate", "-m", "tiny-llada", "--trace", "-", "--json", "hi"), 2, "both write stdout")


def test_a_cut_short_trace_replays_but_is_no_answer(tmp_path):
    r = run_dlm("generate", "-m", "tiny-llada", "--trace", "-", "reverse hello")
    lines = r.stdout.decode().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:3]) + "\n")  # header and two steps: Ctrl-C'd
    rep = run_dlm("replay", cut)
    assert rep.returncode == 1 and rep.stdout == b""  # was: the partial canvas, exit 0
    _one_error(rep, 1, "is incomplete (it has no end record)")


def test_stopping_at_the_length_limit_says_so():
    r = run_dlm("generate", "-m", "tiny-llada", "-n", "4", "reverse hello")
    assert r.returncode == 0 and r.stdout == b"olle\n"
    assert r.stderr.decode().strip() == ("Note: the answer reached --gen-length 4 before it ended; it may be cut "
                                         "short (pass a larger -n)")
    full = run_dlm("generate", "-m", "tiny-llada", "reverse hello")
    assert full.stderr == b""


@pytest.mark.slow
def test_authors_algorithm_names_and_model_names_in_any_case():
    for name in ("low_confidence", "maskgit_plus", "Low-Confidence"):
        r = run_dlm("generate", "-m", "TINY-LLADA", "-a", name, "reverse hello")
        assert r.returncode == 0 and r.stdout == b"olleh\n", (name, r.stderr)
    r = run_dlm("generate", "-m", "tiny-dream", "-a", "topk_margin", "add 12 30")
    assert r.returncode == 0 and r.stdout == b"42\n", r.stderr
    _one_error(run_dlm("generate", "-m", "tiny-lada", "hi"), 1, "unknown model tiny-lada; did you mean tiny-llada?")


@pytest.mark.slow
def test_directories_as_models_get_one_message(tmp_path):
    d = tmp_path / "owner" / "repo"
    d.mkdir(parents=True)
    (d / "x.gguf").write_bytes(b"GGUF")
    for spec in ("owner", "owner/repo", "./owner", str(d)):
        r = subprocess.run([sys.executable, "-m", "dlmcli", "generate", "-m", spec, "hi"], cwd=tmp_path,
                           capture_output=True, env=ENV, timeout=60, stdin=subprocess.DEVNULL)
        _one_error(r, 1, f"{spec} is a directory, not a .gguf file")


def test_a_text_that_does_not_fit_exits_1_in_generate_and_infill():
    _one_error(run_dlm("generate", "-m", "tiny-llada", "-n", "200", "hi"), 1, "has a context of")
    _one_error(run_dlm("infill", "-m", "tiny-llada", "[MASK:200]"), 1, "has a context of")


def test_verbose_shows_a_repeated_llama_cpp_line_once():
    r = run_dlm("generate", "-m", "tiny-llada", "-v", "reverse hello")
    lines = [ln for ln in r.stderr.decode().splitlines() if len(ln) > 24]
    assert r.returncode == 0 and len(lines) == len(set(lines)), [ln for ln in lines if lines.count(ln) > 1]


def test_stats_without_the_log():
    r = run_dlm("generate", "-m", "tiny-llada", "--stats", "reverse hello")
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 1 and lines[0].endswith("finish: eos") and " steps, " in lines[0]


def test_visual_off_a_terminal_ends_with_a_newline_and_keeps_the_finish_reason_at_40_columns():
    r = run_dlm("generate", "-m", "tiny-llada", "--visual", "reverse hello", env={"COLUMNS": "40"})
    err = r.stderr.decode()
    assert r.returncode == 0 and err.endswith("\n"), err[-40:]
    assert "done · finish: eos" in err


def test_no_color_legend_does_not_show_a_colour_ramp():
    r = run_dlm("generate", "-m", "tiny-llada", "--visual", "reverse hello", env={"NO_COLOR": "1"})
    legend = r.stderr.decode().strip().splitlines()[-1]
    assert "confidence low" not in legend and "no colours: no confidence shown" in legend


def test_version_names_dlm_llama_cpp_python_and_the_backends():
    r = run_dlm("--version")
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and lines[0].startswith("dlm ") and lines[1].startswith("llama-cpp-python 0.")
    assert lines[2].startswith("llama.cpp (ggml ") and lines[3].startswith("backends: ") and "CPU" in lines[3]


def test_shell_completion_script():
    # As a user runs it: from bash, which Typer finds among the process's parents (`; exit` keeps
    # bash from exec-ing the command: run straight from a process without a shell above it, as under
    # nohup or setsid, there is no shell to find and the flag fails).
    env = dict(os.environ, PYTHONPATH=str(ROOT), SHELL="/bin/bash")
    r = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m dlmcli --show-completion; exit $?"],
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0 and b"COMPREPLY" in r.stdout and b"complete -o" in r.stdout, r.stderr


def test_info_shows_the_chat_template():
    r = run_dlm("info", "tiny-llada")
    assert r.returncode == 0 and b"--template prints it" in r.stdout
    t = run_dlm("info", "tiny-llada", "--template")
    assert t.returncode == 0 and b"add_generation_prompt" in t.stdout and t.stdout.count(b"\n") >= 1
    assert b"chat_template_text" in run_dlm("info", "tiny-llada", "--json").stdout


@pytest.mark.slow  # 13 processes
def test_argument_help_reads_naturally():
    # Typer wrote 'PROMPT <str>', 'model <str>', '--host <str>', '--device <list[str]>', '--port <int range>'.
    commands = ["generate", "infill", "chat", "serve", "replay", "rpc-server", "models", "info", "pull", "rm",
                "config get", "config set", "config unset"]
    for command in commands:
        out = run_dlm(*command.split(), "--help").stdout.decode()
        assert "<" not in out.replace("<=", ""), (command, out)
    assert "  PROMPT  The prompt" in run_dlm("generate", "--help").stdout.decode()
    assert "  MODEL  A .gguf path" in run_dlm("info", "--help").stdout.decode()


def test_a_broken_template_names_what_skips_it_in_each_command(tmp_path):
    from tools.ggufgen import write_random_gguf

    path = write_random_gguf(tmp_path / "evil.gguf", "llada", chat_template="{{ ''.__class__.__base__.__subclasses__() }}")
    chat = run_dlm("chat", "-m", path, "-n", "4", input=b"hi\n")  # chat has no --raw: it used to advise it
    assert chat.returncode == 1 and b"--raw" in chat.stderr and b"dlm generate --raw" in chat.stderr, chat.stderr
    assert b"pass --raw" not in chat.stderr
    infill = run_dlm("infill", "--chat", "-m", path, "a[MASK:2]")
    assert infill.returncode == 1 and b"drop --chat" in infill.stderr and b"--raw" not in infill.stderr
    gen = run_dlm("generate", "-m", path, "-n", "4", "hi")
    assert gen.returncode == 1 and b"pass --raw to skip the template" in gen.stderr
