"""tools.ggufgen writes files that real llama.cpp loads, tokenizes and runs."""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest

from tools.ggufgen import CHAT_TEMPLATE, CharVocab, render_chat, write_gguf, random_tensors, write_random_gguf

L.llama_backend_init()


@L.llama_log_callback
def _quiet(level, text, user_data):  # keep the native log out of the test output
    pass


L.llama_log_set(_quiet, ctypes.c_void_p())


class Loaded:
    """A model and its vocab; closes itself."""

    def __init__(self, path):
        self.model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        assert self.model, f"llama.cpp could not load {path}"
        self.vocab = L.llama_model_get_vocab(self.model)

    def close(self):
        L.llama_model_free(self.model)

    def meta(self, key):
        buf = ctypes.create_string_buffer(4096)
        n = L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode()

    def tokenize(self, text, add_special=True, parse_special=True):
        b = text.encode()
        out = (L.llama_token * (len(b) + 8))()
        n = L.llama_tokenize(self.vocab, b, len(b), out, len(out), add_special, parse_special)
        assert n >= 0
        return list(out[:n])

    def detokenize(self, ids, special=False):
        buf = ctypes.create_string_buffer(64)
        data = b""
        for t in ids:
            n = L.llama_token_to_piece(self.vocab, t, buf, len(buf), 0, special)
            data += buf.raw[:n]
        return data.decode()

    def logits(self, tokens, n_seq=1):
        """All-position logits of one forward pass over ``tokens`` (repeated as n_seq sequences)."""
        n = len(tokens) * n_seq
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = max(n, 64)
        cp.n_seq_max = n_seq
        ctx = L.llama_init_from_model(self.model, cp)
        batch = L.llama_batch_init(n, 0, 1)
        try:
            for s in range(n_seq):
                for i, t in enumerate(tokens):
                    j = s * len(tokens) + i
                    batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = t, i, 1, 1
                    batch.seq_id[j][0] = s
            batch.n_tokens = n
            assert L.llama_decode(ctx, batch) == 0
            nv = L.llama_vocab_n_tokens(self.vocab)
            return np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, nv)).copy()
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)


@pytest.fixture
def load(tmp_path):
    opened = []

    def _load(arch="llada", **kw):
        m = Loaded(write_random_gguf(tmp_path / f"{arch}-{len(opened)}.gguf", arch, **kw))
        opened.append(m)
        return m

    yield _load
    for m in opened:
        m.close()


TEXTS = [
    "reverse hello",
    "add 12 905 = 917",
    "  two  spaces, then: !\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~ UPPER lower\nnew line ",
    " leading space",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenization_is_one_token_per_character_and_round_trips(load, text):
    m = load()
    ids = m.tokenize(text)
    assert ids[0] == CharVocab.bos_id
    assert len(ids) == len(text) + 1
    assert ids == CharVocab().encode(text)
    assert m.detokenize(ids) == text


def test_special_tokens_in_text_are_single_control_tokens(load):
    m = load()
    v = CharVocab()
    text = render_chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "reverse abc"}])
    ids = m.tokenize(text)
    assert ids[:2] == [v.bos_id, v.system_id]
    assert v.end_id in ids and v.user_id in ids and ids[-1] == v.assistant_id
    assert len(ids) == 1 + 1 + len("be brief") + 1 + 1 + len("reverse abc") + 1 + 1
    assert m.detokenize(ids) == "be briefreverse abc"  # control tokens print nothing unless asked
    assert m.detokenize(ids, special=True) == "<|bos|>" + text
    # parse_special=False: the tags are plain characters
    assert len(m.tokenize("<|end|>", parse_special=False)) == 1 + len("<|end|>")


def test_non_ascii_falls_back_to_bytes(load):
    m = load()
    text = "héllo ☃"
    ids = m.tokenize(text)
    assert ids == CharVocab().encode(text)
    assert m.detokenize(ids) == text


def test_special_ids_and_end_of_generation(load):
    m = load()
    v = m.vocab
    assert (L.llama_vocab_bos(v), L.llama_vocab_eos(v), L.llama_vocab_eot(v)) == (1, 2, 7)
    assert L.llama_vocab_mask(v) == CharVocab.mask_id == 3
    eog = [t for t in range(L.llama_vocab_n_tokens(v)) if L.llama_vocab_is_eog(v, t)]
    assert eog == [CharVocab.eos_id, CharVocab.end_id]
    assert L.llama_vocab_get_add_bos(v)


def test_chat_template_matches_its_python_twin(load):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    m = load()
    assert m.meta("tokenizer.chat_template") == CHAT_TEMPLATE
    tmpl = ImmutableSandboxedEnvironment().from_string(m.meta("tokenizer.chat_template"))
    for msgs in ([{"role": "user", "content": "add 1 2"}],
                 [{"role": "system", "content": "sys"}, {"role": "user", "content": "reverse xyz"}]):
        for gen in (True, False):
            assert tmpl.render(messages=msgs, add_generation_prompt=gen, bos_token="<|bos|>",
                               eos_token="<|endoftext|>") == render_chat(msgs, gen)


@pytest.mark.parametrize("arch,diffusion", [("llada", True), ("dream", True), ("llama", False), ("qwen2", False)])
def test_archs_load_and_decode_every_position(load, arch, diffusion):
    m = load(arch)
    assert L.llama_model_is_diffusion(m.model) == diffusion
    canvas = m.tokenize("<|user|>add 3 4<|end|><|assistant|>") + [CharVocab.mask_id] * 16
    lg = m.logits(canvas)
    assert lg.shape == (len(canvas), len(CharVocab()))
    assert np.isfinite(lg).all() and (lg.std(axis=1) > 0).all()


def test_diffusion_models_are_bidirectional(load):
    """Changing the last token changes the first position's logits (it would not under causal attention)."""
    m = load("llada")
    a = m.logits([1, 20, 21, 22, 3, 3])
    b = m.logits([1, 20, 21, 22, 3, 40])
    assert not np.allclose(a[0], b[0])


def test_shift_logits_and_mask_keys(load):
    assert load("llada").meta("diffusion.shift_logits") == "false"
    assert load("dream").meta("diffusion.shift_logits") == "true"
    assert load("llama").meta("diffusion.shift_logits") is None
    assert load("dream", shift_logits=None).meta("diffusion.shift_logits") is None
    m = load("llada", mask_token=False, chat_template=None)
    assert L.llama_vocab_mask(m.vocab) == -1
    assert m.meta("tokenizer.chat_template") is None


def test_extra_kv_and_context_length(load):
    m = load("llada", context_length=96, extra_kv={"dlm.gen_length": 16, "dlm.steps": 8, "dlm.note": "x"})
    assert m.meta("dlm.gen_length") == "16" and m.meta("dlm.steps") == "8" and m.meta("dlm.note") == "x"
    assert m.meta("llada.context_length") == "96"
    assert L.llama_model_n_ctx_train(m.model) == 96


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_dtypes_load_and_agree_with_f32(tmp_path, dtype):
    """Same weights stored f32 and f16/q8_0 give close logits (the small storage formats work on CPU)."""
    t = random_tensors("dream", n_vocab=len(CharVocab()), n_layer=2, n_embd=64, n_head=2, n_ff=128, seed=3, std=0.1)
    canvas = CharVocab().encode("add 1 2 = ") + [3] * 8
    out = {}
    for dt in ("f32", dtype):
        p = tmp_path / f"{dt}.gguf"
        write_gguf(p, arch="dream", tensors=t, n_head=2, context_length=64, dtype=dt)
        m = Loaded(p)
        out[dt] = m.logits(canvas)
        m.close()
    assert np.abs(out["f32"] - out[dtype]).max() < 0.05 * np.abs(out["f32"]).max()


def test_several_sequences_in_one_pass_match_one(load):
    m = load("dream")
    canvas = CharVocab().encode("reverse abc = ") + [3] * 5
    one = m.logits(canvas)
    two = m.logits(canvas, n_seq=2)
    np.testing.assert_allclose(two[: len(canvas)], one, atol=1e-4)
    np.testing.assert_allclose(two[len(canvas):], one, atol=1e-4)


def test_padded_vocabulary(load):
    m = load("llada", n_vocab=1000)
    assert L.llama_vocab_n_tokens(m.vocab) == 1000
    assert m.tokenize("abc") == CharVocab().encode("abc")


def test_wrong_vocab_size_is_refused(tmp_path):
    t = random_tensors("llada", n_vocab=10, n_layer=1, n_embd=32, n_head=2, n_ff=64)
    with pytest.raises(ValueError, match="vocabulary"):
        write_gguf(tmp_path / "x.gguf", arch="llada", tensors=t, n_head=2, context_length=32)
