"""Batches: several prompts per forward pass, through the API and `dlm generate --batch`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dlmcli.api import Model
from dlmcli.engine import scoring
from dlmcli.engine.params import GenerationParams

from .conftest import run_dlm

PROMPTS = ["reverse abc", "add 12 7", "a much longer prompt than the others", "x"]


@pytest.fixture(scope="module")
def llada(gguf_dir):
    with Model(gguf_dir / "llada.gguf") as m:
        yield m


def test_batch_matches_one_by_one(llada):
    params = GenerationParams(gen_length=8, steps=8, block_length=4, seed=1).validate()
    batched = llada.generate_batch(PROMPTS, params=params)
    single = [llada.generate(p, params=params) for p in PROMPTS]
    assert [r.tokens for r in batched] == [r.tokens for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]
    assert all(r.steps == 8 for r in batched)


def test_batch_steps_are_shared_passes(llada):
    params = GenerationParams(gen_length=8, steps=4, block_length=8, seed=1).validate()
    gen = llada.denoise_batch(PROMPTS[:3], params=params, first_index=5)
    passes = list(gen)
    assert len(passes) == 4
    for steps in passes:
        assert sorted(s.seq for s in steps) == [5, 6, 7]
        assert len({s.forward_s for s in steps}) == 1  # one forward pass for all of them
    assert len(gen.results()) == 3


def test_scoring_threads_do_not_change_results(llada):
    params = GenerationParams(gen_length=16, steps=16, block_length=16, schedule="timestep", seed=2).validate()
    old = llada.vocab_info
    try:
        runs = []
        for n in (1, 3):  # a per-model value, handed to every scoring call
            llada.vocab_info = dataclasses.replace(old, threads=n)
            runs.append([s.canvas.tolist() for s in llada.denoise("reverse hello", params=params)])
        assert runs[0] == runs[1]
    finally:
        llada.vocab_info = old


@pytest.mark.slow
def test_cli_batch_answers_in_order(gguf_dir, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(PROMPTS) + "\n")
    common = ["generate", "-m", gguf_dir / "llada.gguf", "-n", "8", "--seed", "3"]
    r = run_dlm(*common, "--batch", f, "--batch-size", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(PROMPTS) + 1
    for i, p in enumerate(PROMPTS):
        one = run_dlm(*common, p)
        assert one.returncode == 0
        want = one.stdout.decode()[:-1].replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        assert lines[i] == want, i


def test_cli_batch_json_lines_and_stdin(gguf_dir):
    data = ("\n".join(PROMPTS[:3]) + "\n").encode()
    r = run_dlm("generate", "-m", gguf_dir / "dream.gguf", "-n", "8", "--seed", "4", "--json", "--batch", "-",
                "--batch-size", "2", input=data)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [o["index"] for o in objs] == [0, 1, 2]
    for o in objs:
        assert {"model", "prompt_tokens", "tokens", "text", "steps", "finish_reason", "timings"} <= set(o)
    with Model(gguf_dir / "dream.gguf") as m:
        want = [m.prompt_tokens(p) for p in PROMPTS[:3]]
    assert [o["prompt_tokens"] for o in objs] == want


def test_batch_answer_does_not_depend_on_batch_size_with_sampling(gguf_dir, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("\n".join(PROMPTS) + "\n")
    common = ["generate", "-m", gguf_dir / "dream.gguf", "-n", "8", "--seed", "9", "-t", "0.8", "--json",
              "--batch", f]
    a = [json.loads(x)["tokens"] for x in run_dlm(*common, "--batch-size", "1").stdout.splitlines()]
    b = [json.loads(x)["tokens"] for x in run_dlm(*common, "--batch-size", "4").stdout.splitlines()]
    assert len(a) == len(PROMPTS) and a == b


@pytest.mark.parametrize("content,extra,needle", [
    ("", [], "no prompts"),
    ("\n  \n", [], "no prompts"),
    ("abc\n", ["--trace", "t.jsonl"], "--batch"),
    ("abc\n", ["--visual"], "--batch"),
    ("abc\n", ["a prompt too"], "--batch"),
    ("abc\n", ["--force", "0:x"], "--batch"),
])
def test_cli_batch_usage_errors(gguf_dir, tmp_path, content, extra, needle):
    f = tmp_path / "p.txt"
    f.write_text(content)
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "-n", "4", "--batch", f, *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert r.stdout == b""


def test_cli_batch_missing_file(gguf_dir, tmp_path):
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "--batch", tmp_path / "nope.txt")
    assert r.returncode == 2 and b"cannot read --batch file" in r.stderr


def test_rows_gather_equals_fancy_indexing():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 50)).astype(np.float32)
    un = rng.standard_normal((20, 50)).astype(np.float32)
    idx = np.array([3, 7, 8, 19])
    np.testing.assert_array_equal(scoring.Rows(logits, idx).array(), logits[idx])
    want = un[idx] + np.float32(2.5) * (logits[idx] - un[idx])
    np.testing.assert_array_equal(scoring.Rows(logits, idx, un, 2.5).array(), want)


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 50 * 3, 1 << 21])
@pytest.mark.parametrize("algorithm", ["low-confidence", "margin", "entropy"])
def test_greedy_chunking_is_invisible(monkeypatch, chunk_bytes, algorithm):
    """Scoring a few rows at a time gives the same bits as scoring them all at once."""
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((30, 50)) * 4).astype(np.float32)
    idx = np.array([0, 2, 3, 9, 10, 11, 29])
    want = scoring.greedy(logits[idx], algorithm)
    monkeypatch.setattr(scoring, "CHUNK_BYTES", chunk_bytes)
    got = scoring.greedy(scoring.Rows(logits, idx), algorithm)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    p = np.exp(logits[idx].astype(np.float64) - logits[idx].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.array_equal(got[0], p.argmax(1))
    if algorithm == "low-confidence":
        np.testing.assert_allclose(got[1], p.max(1), rtol=1e-6)


@pytest.mark.slow
def test_cli_batch_skips_blank_lines_and_answers_around_a_bad_line(gguf_dir, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("abc\n\n" + "x " * 400 + "\ndef\n\n")  # line 3 does not fit the context of 128
    common = ["generate", "-m", gguf_dir / "llada.gguf", "-n", "4", "--seed", "1", "--batch", f]
    js = run_dlm(*common, "--json", "--batch-size", "3")
    assert js.returncode == 1
    objs = [json.loads(line) for line in js.stdout.decode().splitlines()]
    assert [(o["index"], o["line"]) for o in objs] == [(0, 1), (1, 3), (2, 4)]
    assert "text" in objs[0] and "text" in objs[2] and set(objs[1]) == {"index", "line", "error"}
    assert "has a context of 128" in objs[1]["error"]
    assert js.stderr.decode().startswith("Error: --batch line 3: the prompt (")
    plain = run_dlm(*common)
    assert plain.returncode == 1
    lines = plain.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[-1] == ""  # one line per prompt, the bad one empty
    alone = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "-n", "4", "--seed", "1", "--json", "--batch", "-",
                    input=b"abc\n")
    assert objs[0]["tokens"] == json.loads(alone.stdout)["tokens"]
    lines_err = plain.stderr.decode().strip().splitlines()
    assert len(lines_err) == 1 and lines_err[0].startswith("Error: --batch line 3: ")


def test_default_threads_follow_the_work_in_a_pass(monkeypatch):
    # Small passes (the bundled tiny models) get the idle cores only (spinning workers stall them on
    # shared cores), every core once params x canvas is large (a 46M model's 256-token canvas: 1.2e10).
    from pathlib import Path

    from dlmcli.runtime import llama
    from dlmcli.runtime.llama import SMALL_PASS_WORK, LlamaModel, default_threads

    model = LlamaModel(Path(__file__).resolve().parent.parent / "dlmcli" / "models" / "tiny-llada.gguf")
    try:
        monkeypatch.setattr(llama, "available_cores", lambda: 8)
        monkeypatch.setattr(llama, "_others_running", lambda: 7.6)
        assert default_threads(model, 40) == 1  # busy: one thread
        monkeypatch.setattr(llama, "_others_running", lambda: 3.2)
        assert default_threads(model, 40) == 5  # the cores nobody uses
        monkeypatch.setattr(llama, "_others_running", lambda: 0.1)
        assert default_threads(model, 40) == 8  # idle: all, as llama-diffusion-cli
        big = SMALL_PASS_WORK // model.n_params + 1
        monkeypatch.setattr(llama, "_others_running", lambda: 7.6)
        assert default_threads(model, big) == 8
    finally:
        model.close()


def test_idle_cores_sees_a_busy_neighbour(monkeypatch):
    # A real busy process on this machine is counted (procs_running on Linux, else the load average).
    import multiprocessing as mp
    import os

    from dlmcli.runtime import llama
    from dlmcli.runtime.llama import idle_cores

    assert idle_cores(4, load=0.0) == 4 and idle_cores(4, load=9.0) == 1 and idle_cores(2, load=0.6) == 1
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(2)]
    for p in spinners:
        p.start()
    try:
        if os.path.exists("/proc/stat"):
            import time

            time.sleep(0.2)
            assert llama._others_running() >= 2  # both spinners are runnable at every sample
    finally:
        for p in spinners:
            p.kill()
            p.join()

    def broken():
        raise OSError("neither /proc/stat nor a load average")

    monkeypatch.setattr(llama, "_others_running", broken)
    assert idle_cores(4) == 1


def _spin():
    while True:
        pass
