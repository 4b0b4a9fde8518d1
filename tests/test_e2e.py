"""End to end on real llama.cpp: random-weight GGUFs, the real runtime, the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlmcli.api import Model
from dlmcli.engine.params import GenerationParams

from .conftest import run_dlm
from .reference_algorithms import dream_generate, llada_generate

LLADA_ALG = {"low-confidence": "low_confidence", "random": "random", "origin": "origin",
             "margin": "margin", "entropy": "entropy"}
DREAM_ALG = {"low-confidence": "maskgit_plus", "random": "random", "origin": "origin",
             "margin": "topk_margin", "entropy": "entropy"}



def _forward(model):
    return lambda canvases: [np.array(x) for x in model.runtime.forward([np.asarray(c, np.int32) for c in canvases])]


@pytest.mark.parametrize("schedule", ["block", "timestep"])
@pytest.mark.parametrize("algorithm", list(LLADA_ALG))
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_matches_authors_algorithms_over_llama_cpp(request, arch, schedule, algorithm):
    """At temperature 0, every step's canvas equals the restated reference run over the same forward."""
    model = request.getfixturevalue(arch)
    params = GenerationParams(gen_length=16, steps=8, block_length=8, schedule=schedule, algorithm=algorithm,
                              temperature=0.0, seed=7).validate()
    gen = model.denoise("reverse hello", params=params)
    got = [s.canvas.copy() for s in gen]
    canvas, gs = gen.initial_canvas, gen.gen_start
    fwd = _forward(model)
    if schedule == "block":
        want = llada_generate(fwd, canvas, gs, steps=8, block_length=8, mask_id=model.vocab_info.mask_id,
                              remasking=LLADA_ALG[algorithm], shift=model.shift, seed=7)
    else:
        want = dream_generate(fwd, canvas, gs, steps=8, mask_id=model.vocab_info.mask_id,
                              alg=DREAM_ALG[algorithm], shift=model.shift, seed=7)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.tolist() == w.tolist(), f"step {i} differs"


def test_cfg_runs_both_sequences_in_one_pass(llada):
    params = GenerationParams(gen_length=8, steps=8, block_length=8, cfg=1.0, seed=1).validate()
    gen = llada.denoise("add 1 2", params=params)
    got = [s.canvas.copy() for s in gen]
    want = llada_generate(_forward(llada), gen.initial_canvas, gen.gen_start, steps=8, block_length=8,
                          mask_id=llada.vocab_info.mask_id, cfg=1.0, seed=1)
    assert [g.tolist() for g in got] == [w.tolist() for w in want]


def test_shift_read_from_file_with_family_fallback(gguf_dir):
    for name, shift in [("llada.gguf", False), ("dream.gguf", True), ("llada-noshiftkey.gguf", False),
                        ("dream-noshiftkey.gguf", True)]:
        with Model(gguf_dir / name) as m:
            assert m.shift is shift, name


def test_metadata_and_prompt_tokens(llada):
    assert llada.arch == "llada"
    assert llada.vocab_info.mask_id == 3
    assert 2 in llada.vocab_info.eog_ids
    toks = llada.prompt_tokens("abc")
    assert toks[0] == llada.runtime.bos_id
    shown = b"".join(llada.runtime.piece(t, special=True) for t in toks[1:]).decode()
    assert shown == "<|user|>abc<|end|><|assistant|>"  # the file's template, special tokens parsed
    raw = llada.prompt_tokens("abc", raw=True)
    assert llada.detokenize(raw) == "abc"


def test_generate_json_contract(gguf_dir):
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "-n", "8", "--json", "reverse abc")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert set(obj) == {"model", "prompt_tokens", "tokens", "text", "steps", "finish_reason", "timings"}
    assert set(obj["timings"]) == {"total_s", "forward_s", "sampling_s"}
    assert obj["finish_reason"] in ("eos", "length")
    assert 1 <= obj["steps"] <= 8
    assert obj["prompt_tokens"][0] == 1  # BOS
    assert 3 not in obj["tokens"]  # never a mask in the answer
    assert r.stdout.count(b"\n") == 1


def test_stdout_is_only_the_answer_and_matches_json(gguf_dir):
    common = ["generate", "-m", gguf_dir / "dream.gguf", "-n", "8", "--seed", "3", "reverse abc"]
    plain = run_dlm(*common)
    js = run_dlm(*common, "--json")
    assert plain.returncode == js.returncode == 0
    assert plain.stdout.decode() == json.loads(js.stdout)["text"] + "\n"
    assert plain.stderr == b""  # not a terminal: no view, no chatter


@pytest.mark.slow
def test_stdin_prompt_and_both(gguf_dir):
    base = ["generate", "-m", gguf_dir / "llada.gguf", "-n", "4", "--raw", "--json"]
    only_stdin = run_dlm(*base, input=b"abc\n")
    both = run_dlm(*base, "--stdin", "def", input=b"abc\n")
    assert json.loads(only_stdin.stdout)["prompt_tokens"][1:] == json.loads(run_dlm(*base, "abc").stdout)["prompt_tokens"][1:]
    joined = json.loads(run_dlm(*base, "abc\n\ndef").stdout)["prompt_tokens"]
    assert json.loads(both.stdout)["prompt_tokens"] == joined


@pytest.mark.parametrize("fixture,needle", [
    ("autoregressive.gguf", "autoregressive"),
    ("nomask.gguf", "no usable mask token"),
])
def test_refuses_models_it_cannot_run(gguf_dir, fixture, needle):
    r = run_dlm("generate", "-m", gguf_dir / fixture, "hello")
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
    assert r.stdout == b""


@pytest.mark.parametrize("args,code,needle", [
    (["-n", "100", "--block-length", "32"], 2, "--block-length"),
    (["-s", "0"], 2, "--steps"),
    (["--top-p", "1.5"], 2, "--top-p"),
    (["-t", "-1"], 2, "--temperature"),
    (["--schedule", "zigzag"], 2, "--schedule"),
    (["-n", "512"], 1, "context"),
])
def test_bad_settings_one_line(gguf_dir, args, code, needle):
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", *args, "hello")
    assert r.returncode == code, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines


def test_missing_file_and_not_gguf(tmp_path):
    r = run_dlm("generate", "-m", tmp_path / "nope.gguf", "hi")
    assert r.returncode == 1 and b"not found" in r.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"hello world, not a model")
    r = run_dlm("generate", "-m", bad, "hi")
    assert r.returncode == 1 and b"not a GGUF" in r.stderr and b"Traceback" not in r.stderr


def test_no_template_falls_back_to_raw(gguf_dir):
    with Model(gguf_dir / "notemplate.gguf") as m:
        assert m.chat_template is None
        assert m.prompt_tokens("abc") == m.prompt_tokens("abc", raw=True)


def test_family_defaults_and_overrides(llada, dream):
    p = llada.params()
    assert (p.schedule, p.block_length, p.algorithm, p.temperature) == ("block", 32, "low-confidence", 0.0)
    assert p.steps == p.gen_length
    q = dream.params()
    assert (q.schedule, q.algorithm, q.temperature, q.top_p) == ("timestep", "entropy", 0.2, 0.95)
    r = llada.params(gen_length=16)
    assert (r.gen_length, r.steps, r.block_length) == (16, 16, 16)  # steps follow, block shrinks
    s = llada.params(gen_length=64, steps=32)
    assert s.steps == 32


def test_close_is_idempotent_and_frees_in_order(gguf_dir, monkeypatch):
    from dlmcli.runtime.native import lib

    freed = []
    for name in ("llama_batch_free", "llama_free", "llama_model_free"):
        real = getattr(lib, name)
        # Record each real free as it happens (the native call still runs).
        monkeypatch.setattr(lib, name, lambda *a, _real=real, _name=name: (freed.append(_name), _real(*a))[1])
    m = Model(gguf_dir / "llada.gguf")
    m.generate("x", gen_length=4)
    rt = m.runtime
    assert rt.ctx is not None and rt.model.ptr is not None
    m.close()
    assert rt.ctx is None and rt.batch is None and rt.model.ptr is None
    assert freed == ["llama_batch_free", "llama_free", "llama_model_free"]  # batch, context, then the model
    m.close()
    assert len(freed) == 3  # the second close frees nothing twice
