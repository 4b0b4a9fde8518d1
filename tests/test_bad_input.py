"""Hostile and broken input through the real CLI: the rows of docs/reliability.md.

An error row passes when dlm exits with the documented code, prints exactly one ``Error: ...`` line
on stderr (Click's own flag errors put their ``Usage:`` lines before it), nothing on stdout, no
traceback, and is not killed by a signal. The table rows are independent subprocesses, so they run
a few at a time, once per session; the tests then check each one.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dlmcli.engine.params import MAX_LENGTH, GenerationParams
from dlmcli.errors import UsageError
from dlmcli.render.trace import read_trace

from .conftest import ROOT, run_dlm, sigint_default

BAD_BYTE = os.fsdecode(b"\xff")  # an argv byte that is not UTF-8, as Python hands it over


@dataclass(frozen=True)
class Row:
    id: str
    args: tuple  # "{name}" is a path from the `paths` fixture
    code: int
    needle: str = ""  # in the Error line (or on stdout when the row succeeds)
    stdin: bytes = b""
    usage: bool = False  # Click refused the flag itself: its Usage lines come before the Error line


def G(id, *args, code, needle="", stdin=b"", usage=False, model="{llada}"):
    """A `dlm generate -m MODEL -n 8 ...` row."""
    return Row(id, ("generate", "-m", model, "-n", "8", *args), code, needle, stdin, usage)


ROWS = [
    # --- the model file -------------------------------------------------------------------
    G("model-is-a-directory", "hi", model="{dir}", code=1, needle="is a directory"),
    G("model-empty-name", "hi", model="", code=1, needle="empty model name"),
    G("model-zero-bytes", "hi", model="{zero}", code=1, needle="not a GGUF file"),
    G("model-magic-only", "hi", model="{magic}", code=1, needle="could not load"),
    G("model-truncated-weights", "hi", model="{half}", code=1, needle="truncated or corrupt"),
    G("model-truncated-header", "hi", model="{head}", code=1, needle="truncated or corrupt"),
    G("model-read-fails", "hi", model="/proc/self/mem", code=1, needle="cannot read"),
    G("model-unknown-arch", "hi", model="{unknown_arch}", code=1, needle="architecture"),
    G("model-mask-outside-vocab", "hi", model="{mask_out}", code=1, needle="no usable mask token"),
    G("model-context-zero", "hi", model="{ctx0}", code=1, needle="context length of 0"),
    G("model-context-past-2^31", "hi", model="{ctx_neg}", code=1, needle="context length of -"),
    G("model-template-3MB", "hi", model="{big_template}", code=1, needle="produced over"),
    G("model-template-invalid-jinja", "hi", model="{bad_jinja}", code=1, needle="failed to render"),
    G("model-template-bad-file-with-raw", "--raw", "hi", model="{bad_jinja}", code=0),
    G("model-nan-weights", "hi", model="{nan}", code=1, needle="NaN or infinite logits"),
    G("model-inconsistent-hints", "hi", model="{bad_hints}", code=0),
    # --- model names, offline (run_dlm sets HF_HUB_OFFLINE=1) ------------------------------
    G("name-unknown", "hi", model="no-such-model", code=1, needle="unknown model no-such-model"),
    G("name-repo-not-pulled", "hi", model="owner/repo", code=1, needle="not downloaded and HF_HUB_OFFLINE"),
    G("name-pull-while-offline", "--pull", "hi", model="owner/repo:Q4_K_M", code=1, needle="HF_HUB_OFFLINE"),
    # --- the prompt ---------------------------------------------------------------------------
    G("prompt-empty-argument", "", code=2, needle="no prompt"),
    G("prompt-stdin-only-newlines", code=2, needle="no prompt", stdin=b"\n\n\n"),
    G("prompt-only-spaces", "   ", code=0),
    G("prompt-nul-bytes-on-stdin", code=0, stdin=b"a\x00b\x00"),
    G("prompt-stdin-not-utf8", code=1, needle="stdin is not valid UTF-8 (byte 1)", stdin=b"a\xff\xfe"),
    G("prompt-argument-not-utf8", "ab" + BAD_BYTE, code=1, needle="PROMPT argument is not valid UTF-8 (byte 2)"),
    G("prompt-system-not-utf8", "--system", BAD_BYTE, "hi", code=1, needle="--system is not valid UTF-8"),
    G("prompt-holds-mask-token", "<|mask|>", code=2, needle="mask token"),
    G("prompt-mask-text-with-raw", "--raw", "<|mask|>", code=0),
    G("prompt-longer-than-context", code=1, needle="has a context of 128", stdin=b"a" * 600),
    G("prompt-1MB-on-stdin", "--raw", code=1, needle="has a context of 128", stdin=b"abc " * 262144),
    # --- numeric options (every value: test_every_bad_value_names_its_flag) ------------------------
    G("gen-length-zero", "-n", "0", "hi", code=2, needle="--gen-length"),
    G("gen-length-past-context", "-n", "100000", "hi", code=1, needle="has a context of 128"),
    G("gen-length-10^23", "-n", "99999999999999999999999", "hi", code=2, needle="--gen-length"),
    G("gen-length-not-a-number", "-n", "abc", "hi", code=2, needle="'-n' / '--gen-length'", usage=True),
    G("steps-far-above-length", "-s", "100000", "hi", code=0),
    G("steps-do-not-split-over-blocks", "--block-length", "4", "-s", "3", "hi", code=2, needle="--steps 3"),
    G("block-length-does-not-divide", "--block-length", "3", "hi", code=2, needle="e.g. 4"),
    G("top-p-nan", "--top-p", "nan", "hi", code=2, needle="--top-p"),
    G("temperature-inf", "-t", "inf", "hi", code=2, needle="--temperature"),
    G("cfg-inf", "--cfg", "inf", "hi", code=2, needle="--cfg"),
    G("seed-negative", "--seed", "-1", "hi", code=2, needle="--seed"),
    G("threads-zero", "--threads", "0", "hi", code=2, needle="'--threads'", usage=True),
    G("threads-100000", "--threads", "100000", "hi", code=2, needle="less than or equal to 512", usage=True),
    G("ngl-garbage", "--ngl", "garbage", "hi", code=2, needle="'--ngl'", usage=True),
    G("ngl-past-c-int", "--ngl", str(2**40), "hi", code=0),
    G("delay-inf", "--delay", "inf", "hi", code=2, needle="'--delay'", usage=True),
    G("unknown-flag", "--bogus", "hi", code=2, needle="No such option: --bogus", usage=True),
    # --- --trace ------------------------------------------------------------------------------
    G("trace-is-a-directory", "--trace", "{dir}", "hi", code=1, needle="Is a directory"),
    G("trace-under-proc", "--trace", "/proc/dlm-trace.jsonl", "hi", code=1, needle="cannot write the trace file"),
    G("trace-read-only-file", "--trace", "/proc/version", "hi", code=1, needle="cannot write the trace file"),
    G("trace-disk-full", "--trace", "/dev/full", "hi", code=1, needle="No space left on device"),
    G("trace-to-dev-null", "--trace", "/dev/null", "hi", code=0),
    # --- infill TEXT and --force (parsing: tests/test_infill_parse.py) -------------------------
    Row("infill-span-zero", ("infill", "-m", "{llada}", "a [MASK:0] b"), 2, "a span needs at least 1"),
    Row("infill-span-negative", ("infill", "-m", "{llada}", "a [MASK:-3] b"), 2, "a span needs at least 1"),
    Row("infill-span-garbled", ("infill", "-m", "{llada}", "a [MASK:abc] b"), 2, "bad placeholder"),
    Row("infill-span-unterminated", ("infill", "-m", "{llada}", "a [MASK b"), 2, "bad placeholder"),
    Row("infill-span-10-digits", ("infill", "-m", "{llada}", "[MASK:9999999999]"), 2, "longer than any"),
    Row("infill-span-past-context", ("infill", "-m", "{llada}", "[MASK:999999999]"), 1, "has a context of 128"),
    Row("infill-no-placeholder", ("infill", "-m", "{llada}", "plain text"), 2, "nothing to fill"),
    Row("infill-no-text", ("infill", "-m", "{llada}"), 2, "no text"),
    Row("infill-text-not-utf8", ("infill", "-m", "{llada}", BAD_BYTE + "[MASK]"), 1, "TEXT argument is not valid"),
    Row("infill-stdin-not-utf8", ("infill", "-m", "{llada}"), 1, "stdin is not valid UTF-8", stdin=b"\xff[MASK]"),
    Row("infill-user-not-utf8", ("infill", "-m", "{llada}", "--chat", "--user", BAD_BYTE, "[MASK]"), 1,
        "--user is not valid UTF-8"),
    Row("infill-user-without-chat", ("infill", "-m", "{llada}", "--user", "hi", "[MASK]"), 2, "add --chat"),
    G("force-garbled", "--force", "x", "hi", code=2, needle="expected POS:TEXT"),
    G("force-empty-text", "--force", "3:", "hi", code=2, needle="is empty"),
    G("force-past-the-region", "--force", "6:abcdef", "hi", code=2, needle="does not fit"),
    G("force-overlap", "--force", "0:a", "--force", "0:b", "hi", code=2, needle="overlaps"),
    G("force-not-utf8", "--force", "0:" + BAD_BYTE, "hi", code=1, needle="--force is not valid UTF-8"),
    # --- replay, info, rm, pull, config ---------------------------------------------------------
    Row("replay-garbled", ("replay", "{garbled_trace}"), 1, "not a dlm trace"),
    Row("replay-a-directory", ("replay", "{dir}"), 1, "is a directory"),
    Row("replay-speed-subnormal", ("replay", "{empty_trace}", "--speed", "1e-320"), 2, "--speed"),
    Row("info-not-gguf", ("info", "{text}"), 1, "not a GGUF file"),
    Row("info-zero-bytes", ("info", "{zero}"), 1, "is empty"),
    Row("info-magic-only", ("info", "{magic}"), 1, "truncated or not a GGUF"),
    Row("info-truncated-weights", ("info", "{half}"), 1, "is truncated: its tensors need"),
    Row("info-directory", ("info", "{dir}"), 1, "is a directory"),
    Row("rm-not-downloaded", ("rm", "-y", "llada-8b-instruct"), 1, "nothing to remove"),
    Row("rm-a-local-file", ("rm", "-y", "{llada}"), 1, "local file, not a pulled model"),
    Row("pull-while-offline", ("pull", "owner/repo"), 1, "HF_HUB_OFFLINE is set"),
    Row("config-unknown-key", ("config", "set", "colour", "blue"), 2, "unknown config key"),
    Row("unknown-command", ("frobnicate",), 2, "No such command", usage=True),
]


@pytest.fixture(scope="module")
def paths(gguf_dir, tmp_path_factory) -> dict[str, str]:
    """Broken files, each a row's input; the good ones come from conftest's gguf_dir."""
    from tools.ggufgen import CHAT_TEMPLATE, CharVocab, random_tensors, write_gguf, write_random_gguf

    d = tmp_path_factory.mktemp("bad")
    p = {"dir": str(d), "missing": str(d / "missing.gguf"), "nodir": str(d / "no" / "such" / "t.jsonl")}
    for name in ("llada", "dream", "nomask"):
        p[name] = str(gguf_dir / f"{name}.gguf")
    p["ar"] = str(gguf_dir / "autoregressive.gguf")

    def tiny(name, **kw):
        p[name] = write_random_gguf(d / f"{name}.gguf", "llada", seed=1, std=0.5, context_length=128, **kw)

    tiny("mask_out", mask_token=False, extra_kv={"tokenizer.ggml.mask_token_id": 99999})
    tiny("big_template", chat_template="x" * (3 << 20))  # 3 MB of template text
    tiny("bad_jinja", chat_template="{% if %}")
    tiny("bad_hints", extra_kv={"dlm.gen_length": "many", "dlm.steps": 0, "dlm.block_length": 7})
    for name, ctx in (("ctx0", 0), ("ctx_neg", 2**31)):
        p[name] = write_random_gguf(d / f"{name}.gguf", "llada", context_length=ctx)
    vocab = CharVocab()
    shapes = dict(n_vocab=len(vocab), n_layer=2, n_embd=64, n_head=4, n_ff=128)
    p["unknown_arch"] = str(d / "unknown_arch.gguf")
    write_gguf(p["unknown_arch"], arch="frobnicator", tensors=random_tensors("llada", **shapes), n_head=4,
               context_length=128, vocab=vocab, dtype="f32")
    nan = random_tensors("llada", **shapes)
    nan["output.weight"] = np.full_like(nan["output.weight"], np.nan)
    p["nan"] = str(d / "nan.gguf")
    write_gguf(p["nan"], arch="llada", tensors=nan, n_head=4, context_length=128, vocab=vocab, dtype="f32",
               chat_template=CHAT_TEMPLATE)

    good = Path(p["llada"]).read_bytes()
    for name, data in (("zero", b""), ("text", b"hello, not a model\n"), ("magic", b"GGUF"),
                       ("half", good[: len(good) // 2]), ("head", good[:100]),
                       ("empty_trace", b""), ("garbled_trace", b"garbage\n"), ("binary_trace", b"\xff\xfe\x00\n")):
        p[name] = str(d / name)
        Path(p[name]).write_bytes(data)
    return p


def _run(row: Row, paths: dict[str, str]) -> subprocess.CompletedProcess:
    args = [a.format(**paths) for a in row.args]
    return run_dlm(*args, input=row.stdin, env={"HF_HOME": paths["dir"] + "/hf"})


@pytest.fixture(scope="module")
def outcomes(request, paths) -> dict[str, subprocess.CompletedProcess]:
    """Run the selected rows, a few processes at a time."""
    wanted = {item.callspec.id for item in request.session.items
              if getattr(item, "originalname", "") == "test_row" and hasattr(item, "callspec")}
    rows = [r for r in ROWS if r.id in wanted]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip([r.id for r in rows], pool.map(lambda r: _run(r, paths), rows)))


def check(r: subprocess.CompletedProcess, code: int, needle: str = "", usage: bool = False) -> None:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, f"exit {r.returncode}, stderr: {err}"  # a signal death is negative
    assert "Traceback" not in err
    if code == 0:
        # Random weights rarely end before -n: the one note that says so is all stderr may hold.
        err = "".join(ln for ln in err.splitlines(True) if not ln.startswith("Note: the answer reached --gen-length"))
        assert err == "" and r.stdout.endswith(b"\n") and needle.encode() in r.stdout
        return
    assert r.stdout == b""
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and needle in errors[0], lines
    if usage:
        assert lines[0].startswith("Usage: ") and lines[-1] == errors[0], lines
    else:
        assert lines == errors, lines


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
@pytest.mark.slow
def test_row(row, outcomes):
    check(outcomes[row.id], row.code, row.needle, row.usage)


def test_rows_have_unique_ids():
    assert len({r.id for r in ROWS}) == len(ROWS)


# --- every out-of-range value, in-process (the same validate() the CLI rows above go through) --------

BAD_VALUES = [
    *[("gen_length", v) for v in (0, -5, MAX_LENGTH + 1, 10**23, 8.5, True)],
    *[("steps", v) for v in (0, -1, MAX_LENGTH + 1, 2**40)],
    *[("block_length", v) for v in (0, -4, 3, 16)],
    *[("top_p", v) for v in (0.0, -0.5, 1.5, float("nan"), float("inf"), "0.5")],
    *[("temperature", v) for v in (-1.0, float("nan"), float("inf"), float("-inf"), 1e-320, 1e-7)],
    *[("alg_temp", v) for v in (-1.0, float("nan"), float("inf"), 1e-320)],
    *[("top_k", v) for v in (-1, 2.5)],
    *[("cfg", v) for v in (-1.0, float("nan"), float("inf"), 1e38)],
    *[("eps", v) for v in (0.0, 1.0, -0.1, float("nan"), float("inf"))],
    *[("threshold", v) for v in (0.0, -1.0, 2.0, float("nan"))],
    *[("factor", v) for v in (0.0, -1.0, float("inf"), float("nan"))],
    *[("seed", v) for v in (-1, 2**63, 10**30, 1.5)],
    ("schedule", ""), ("schedule", "zigzag"), ("algorithm", "best"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_every_bad_value_names_its_parameter_and_flag(name, value):
    """The library names the parameter (what the server reports); the CLI spells it as the flag."""
    flag = "--" + name.replace("_", "-")
    with pytest.raises(UsageError) as e:
        GenerationParams(**{"gen_length": 8, "steps": 8, "block_length": 8, name: value}).validate()
    assert e.value.param == name and name in str(e.value) and "--" not in str(e.value)
    assert flag in e.value.cli_message()


@pytest.mark.parametrize("name,value", [
    ("gen_length", MAX_LENGTH), ("steps", MAX_LENGTH), ("top_p", 1.0), ("temperature", 1e-6),
    ("temperature", 1e300), ("alg_temp", 1e-6), ("cfg", 1e6), ("seed", 0), ("seed", 2**63 - 1),
    ("threshold", 1.0), ("factor", 1e9), ("top_k", 10**12), ("gen_length", np.int64(8)),
])
def test_edge_values_are_accepted(name, value):
    kw = {"gen_length": 8, "steps": 8, "block_length": 8, name: value}
    if name == "gen_length":
        kw["block_length"] = value  # one block: 8 steps split over it
    GenerationParams(**kw).validate()


def test_both_rules_at_once_is_refused():
    with pytest.raises(UsageError, match="pass one"):
        GenerationParams(gen_length=8, steps=8, block_length=8, threshold=0.5, factor=1.0).validate()


# --- files dlm cannot read, stdio that is closed or full ---------------------------------------------


def test_unreadable_model_file(paths, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file; the row model-read-fails covers a read that fails")
    path = tmp_path / "locked.gguf"
    path.write_bytes(Path(paths["llada"]).read_bytes())
    path.chmod(0)
    check(run_dlm("generate", "-m", path, "hi"), 1, "cannot read")


def _spawn(*args, env=None, **kw) -> subprocess.Popen:
    full = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                HF_HUB_OFFLINE="1", **(env or {}))
    kw.setdefault("preexec_fn", sigint_default)
    return subprocess.Popen([sys.executable, "-m", "dlmcli", *map(str, args)], env=full, **kw)


@pytest.mark.parametrize("args", [
    ("generate", "-m", "{llada}", "-n", "8", "hi"),
    ("generate", "-m", "{llada}", "-n", "8", "--json", "hi"),
    ("models",),
    ("info", "{llada}"),
], ids=["generate", "generate-json", "models", "info"])
def test_reader_gone_before_any_output_is_quiet_success(paths, args):
    """`dlm ... | head -c0`: the pipe's reader has exited before dlm writes anything."""
    proc = _spawn(*[a.format(**paths) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader: dlm's first write gets EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b""


def test_head_c1_reads_one_byte_then_closes(paths):
    proc = _spawn("generate", "-m", paths["llada"], "-n", "16", "--json", "hi", stdin=subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"{"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b""


def _closing(*fds):
    def pre():
        for fd in fds:
            os.close(fd)
    return pre


def test_closed_stdout_is_one_error(paths):
    """`dlm generate ... >&-`: no stdout at all."""
    proc = _spawn("generate", "-m", paths["llada"], "-n", "8", "hi", stdin=subprocess.DEVNULL,
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_closing(1))
    _, err = proc.communicate(timeout=60)
    check(subprocess.CompletedProcess([], proc.returncode, b"", err), 1, "standard output is closed")


def test_stdout_on_a_full_disk_is_one_error(paths):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as full:
        for args in (("generate", "-m", paths["llada"], "-n", "8", "hi"), ("models",)):
            proc = _spawn(*args, stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE)
            _, err = proc.communicate(timeout=60)
            check(subprocess.CompletedProcess([], proc.returncode, b"", err), 1, "No space left on device")


def test_closed_stdin_and_stderr_keep_the_exit_codes(paths):
    ok = _spawn("generate", "-m", paths["llada"], "-n", "8", "hi", stdout=subprocess.PIPE,
                preexec_fn=_closing(0, 2))
    out, _ = ok.communicate(timeout=60)
    assert ok.returncode == 0 and out.endswith(b"\n")
    no_prompt = _spawn("generate", "-m", paths["llada"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       preexec_fn=_closing(0))
    out, err = no_prompt.communicate(timeout=60)
    check(subprocess.CompletedProcess([], no_prompt.returncode, out, err), 2, "no prompt")


def test_trace_write_failing_midway_is_one_error_and_the_trace_reads_incomplete(paths, tmp_path):
    """The disk fills up while the trace is written (a 4 kB file size limit stands in for it)."""
    trace = tmp_path / "t.jsonl"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = _spawn("generate", "-m", paths["llada"], "-n", "64", "--block-length", "64", "--no-early-stop",
                  "--trace", trace, "hi", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, preexec_fn=limit)
    out, err = proc.communicate(timeout=60)
    check(subprocess.CompletedProcess([], proc.returncode, out, err), 1, "writing the trace file")
    t = read_trace(trace)
    assert t.header["type"] == "header" and 0 < len(t.steps) < 64 and not t.complete


# --- Ctrl-C and kill ---------------------------------------------------------------------------------

INJECT_SIGINT_AT_LOAD = """
import os, signal, sys
import llama_cpp.llama_cpp as lib
real = lib.llama_model_load_from_file
def load(*args):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives just as llama.cpp starts loading
    return real(*args)
lib.llama_model_load_from_file = load
sys.argv[0] = "dlm"
from dlmcli.cli import main
main()
"""


INJECT_SIGINT_AT_IMPORT = """
import builtins, os, signal, sys
real = builtins.__import__
def imp(name, *args, **kw):
    if name == "typer":  # Ctrl-C while the CLI's libraries are still being imported
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kw)
builtins.__import__ = imp
sys.argv[0] = "dlm"
import dlmcli
dlmcli.run()  # what the installed `dlm` script calls
"""


def test_ctrl_c_while_the_cli_is_imported_is_one_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", INJECT_SIGINT_AT_IMPORT, "models"], capture_output=True, env=env,
                       timeout=60, preexec_fn=sigint_default)
    assert (r.returncode, r.stdout, r.stderr) == (130, b"", b"Interrupted.\n")


def test_ctrl_c_during_model_load(paths):
    """The signal lands as the native load starts: llama.cpp must cancel it (its log says so)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", INJECT_SIGINT_AT_LOAD, "generate", "-m", paths["llada"], "-n", "8",
                        "--verbose", "hi"], capture_output=True, env=env, timeout=60, preexec_fn=sigint_default)
    err = r.stderr.decode()
    assert r.returncode == 130 and r.stdout == b"" and "Traceback" not in err
    assert "cancelled model load" in err and err.endswith("Interrupted.\n")


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """Big enough that one forward pass over 1024 positions takes a second or more on a CPU."""
    from tools.ggufgen import write_random_gguf

    path = tmp_path_factory.mktemp("slow") / "slow.gguf"
    write_random_gguf(path, "llada", n_layer=8, n_embd=512, n_ff=1536, context_length=2048)
    return path


def _start_slow_run(slow_model: Path, trace: Path) -> subprocess.Popen:
    proc = _spawn("generate", "-m", slow_model, "-n", "1024", "-s", "4", "--block-length", "1024",
                  "--no-early-stop", "--raw", "--trace", trace, "hi", stdin=subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (trace.exists() and trace.stat().st_size > 0):  # the header: the first pass is starting
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.01)
    return proc


@pytest.mark.slow
def test_ctrl_c_during_denoising_exits_130_and_the_trace_reads_incomplete(slow_model, tmp_path):
    trace = tmp_path / "t.jsonl"
    proc = _start_slow_run(slow_model, trace)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == b"" and err == b"Interrupted.\n"
    t = read_trace(trace)
    assert not t.complete and len(t.steps) < 4
    r = run_dlm("replay", trace)
    assert r.returncode == 1 and b"incomplete" in r.stderr and b"Traceback" not in r.stderr and r.stdout == b""


@pytest.mark.slow
def test_sigterm_during_denoising_leaves_a_trace_that_reads_incomplete(slow_model, tmp_path):
    trace = tmp_path / "t.jsonl"
    proc = _start_slow_run(slow_model, trace)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    # unwinds like Ctrl-C: the forward pass is aborted, one line, 128 + SIGTERM
    assert (proc.returncode, out, err) == (143, b"", b"Terminated.\n")
    assert time.monotonic() - t0 < 5  # not after the remaining passes (each takes over a second)
    assert not read_trace(trace).complete


def test_sigterm_ignored_by_the_caller_stays_ignored(paths):
    """A caller that ignores SIGTERM for its child keeps it ignored: dlm installs nothing over it."""
    code = ("import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.argv[0] = 'dlm'; "
            "import dlmcli.cli as c; c._handle_sigterm(); "
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert r.stdout.strip() == b"True", r.stderr


# --- the HF token --------------------------------------------------------------------------------------

SECRET = "hf_dlmSecretToken0123456789abcdefXYZ"


@pytest.mark.slow
def test_hf_token_never_in_output_logs_or_traces(paths, tmp_path):
    env = {"HF_TOKEN": SECRET, "HUGGING_FACE_HUB_TOKEN": SECRET, "HF_HOME": str(tmp_path / "hf")}
    trace = tmp_path / "t.jsonl"
    runs = [
        run_dlm("generate", "-m", paths["llada"], "-n", "8", "--verbose", "--trace", trace, "--json", "hi", env=env),
        run_dlm("models", env=env),
        run_dlm("info", paths["llada"], "--json", env=env),
        run_dlm("generate", "-m", "owner/repo", "--pull", "hi", env=env),  # offline: fails
        run_dlm("pull", "owner/repo", env={**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}),
    ]
    assert runs[0].returncode == 0 and runs[-1].returncode == 1
    for r in runs:
        assert SECRET.encode() not in r.stdout + r.stderr and SECRET[3:].encode() not in r.stdout + r.stderr
    assert SECRET not in trace.read_text()


def test_api_refuses_text_that_is_not_utf8(gguf_dir):
    from dlmcli.api import Model

    with Model(gguf_dir / "llada.gguf") as m:
        for call in (lambda: m.generate("a\udcff", gen_length=4), lambda: m.generate("a", system="\udcff"),
                     lambda: m.infill("[MASK] b", chat=True, user="\udcff")):
            with pytest.raises(UsageError, match="not UTF-8"):
                call()


def test_docs_table_and_rows_agree():
    """docs/reliability.md names every row, and every row it names exists (so the table stays tested)."""
    import re

    doc = "\n".join(ln for ln in (ROOT / "docs" / "reliability.md").read_text().splitlines() if ln.startswith("|"))
    named = set()
    for cell in re.findall(r"\brows? ([A-Za-z0-9^ ,.-]+?)(?:;|\||$)", doc, flags=re.M):
        named.update(n.strip() for n in cell.split(","))
    ids = {r.id for r in ROWS}
    assert named - ids == set(), "the doc names rows that do not exist"
    assert ids - named == set(), "rows missing from the doc"
    bad = {f"{n}={v!r}" for n, v in BAD_VALUES}
    for ref in re.findall(r"\bbad ([a-z_]+)=(\*|[^ ,;|]+)", doc):
        assert any(b.startswith(f"{ref[0]}=") for b in bad) if ref[1] == "*" else f"{ref[0]}={ref[1]}" in bad, ref
