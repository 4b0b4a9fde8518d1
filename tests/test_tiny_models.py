"""The bundled tiny models answer fresh random prompts through the real CLI (issue 3's acceptance test).

Each prompt runs `python -m dlmcli generate ...` in a subprocess with nothing but the model and the
prompt, and stdout must be exactly the answer. Prompts are drawn fresh each run; set DLM_TEST_SEED to
replay one (the seed is in every failure message).
"""

from __future__ import annotations

import ctypes
import os
import random

import pytest

from dlmcli.hub import BUNDLED_DIR

from .conftest import run_dlm

N_PER_TASK = 40  # prompts per task and model
MIN_ACCURACY = 0.95
SEED = int(os.environ.get("DLM_TEST_SEED", random.SystemRandom().randrange(2**31)))
MODELS = ("tiny-llada", "tiny-dream")

pytestmark = pytest.mark.skipif(not all((BUNDLED_DIR / f"{m}.gguf").is_file() for m in MODELS),
                                reason="bundled tiny models missing")


def draw(rng: random.Random, kind: str) -> tuple[str, str]:
    """A fresh prompt and its answer: WORD of 3-12 lowercase letters, or 0 <= A, B <= 999."""
    if kind == "reverse":
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
        return f"reverse {w}", w[::-1]
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"add {a} {b}", str(a + b)


def answers(argv_for_prompt, prompts):
    """Run the CLI once per prompt; returns decoded stdouts.

    One at a time: llama.cpp's worker threads spin while they wait, so two runs side by side on a
    two-core machine slow each other down many times over.
    """
    outs = []
    for p in prompts:
        r = run_dlm(*argv_for_prompt(p))
        assert r.returncode == 0, r.stderr.decode()
        outs.append(r.stdout.decode())
    return outs


def score(outs, expected):
    wrong = [(o, e) for o, e in zip(outs, expected) if o != e]
    return 1 - len(wrong) / len(expected), wrong


@pytest.mark.parametrize("kind", ["reverse", "add"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.slow
def test_chat_answers_are_exact(model, kind):
    rng = random.Random(f"{SEED}:{model}:{kind}")
    items = [draw(rng, kind) for _ in range(N_PER_TASK)]
    outs = answers(lambda q: ("generate", "-m", model, q), [q for q, _ in items])
    acc, wrong = score(outs, [a + "\n" for _, a in items])
    assert acc >= MIN_ACCURACY, f"{model} {kind}: {acc:.2f} with DLM_TEST_SEED={SEED}; wrong: {wrong[:5]}"


@pytest.mark.slow
def test_default_model_is_tiny_llada():
    rng = random.Random(f"{SEED}:default")
    items = [draw(rng, k) for k in ("reverse", "add") for _ in range(3)]
    r = run_dlm("generate", items[0][0])
    assert r.returncode == 0 and "tiny-llada" in r.stderr.decode()
    outs = [r.stdout.decode()] + answers(lambda q: ("generate", q), [q for q, _ in items[1:]])
    acc, wrong = score(outs, [a + "\n" for _, a in items])
    assert acc >= 5 / 6, f"DLM_TEST_SEED={SEED}; wrong: {wrong}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.slow
def test_raw_lines_continue(model):
    """--raw 'reverse WORD =' -> ' DROW' and 'add A B =' -> ' SUM' (the pre-training line format)."""
    rng = random.Random(f"{SEED}:{model}:raw")
    items = [draw(rng, k) for k in ("reverse", "add") for _ in range(5)]
    outs = answers(lambda q: ("generate", "--raw", "-m", model, q + " ="), [q for q, _ in items])
    acc, wrong = score(outs, [f" {a}\n" for _, a in items])
    assert acc >= 9 / 10, f"{model} raw: DLM_TEST_SEED={SEED}; wrong: {wrong}"


@pytest.mark.parametrize("model", MODELS)
def test_system_prompt_is_understood(model):
    r = run_dlm("generate", "-m", model, "--system", "You are a helpful assistant.", "reverse diffusion")
    assert r.stdout.decode() == "noisuffid\n"


@pytest.mark.parametrize("model,arch,shift", [("tiny-llada", "llada", "false"), ("tiny-dream", "dream", "true")])
def test_metadata(model, arch, shift):
    import llama_cpp as L

    from tools.ggufgen import CHAT_TEMPLATE, CharVocab

    path = BUNDLED_DIR / f"{model}.gguf"
    assert path.stat().st_size < 8 * 2**20
    m = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
    try:
        def meta(key):
            buf = ctypes.create_string_buffer(4096)
            return buf.value.decode() if L.llama_model_meta_val_str(m, key.encode(), buf, len(buf)) >= 0 else None

        v = L.llama_model_get_vocab(m)
        assert meta("general.architecture") == arch and meta("general.name") == model
        assert L.llama_model_is_diffusion(m)
        assert meta("diffusion.shift_logits") == shift
        assert L.llama_vocab_mask(v) == CharVocab.mask_id
        assert L.llama_vocab_eos(v) == CharVocab.eos_id and L.llama_vocab_is_eog(v, CharVocab.end_id)
        assert meta("tokenizer.chat_template") == CHAT_TEMPLATE
        assert meta("dlm.gen_length") == "16" and meta("dlm.steps") == "16"
        assert meta("dlm.block_length") == ("8" if arch == "llada" else None)
        assert L.llama_model_n_ctx_train(m) == 96
    finally:
        L.llama_model_free(m)
