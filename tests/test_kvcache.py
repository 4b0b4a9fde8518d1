"""The KV-cache route (issue 18, docs/kv-cache.md): a llada/dream GGUF loaded under its twin arch
(llama/qwen2) with a non-causal KV cache gives the diffusion pass's logits, for a full pass and for a
pass that recomputes only window + suffix against fresh cached prefix K/V.

"Equal" has two grades. When the same attention kernel runs, the logits are bit-for-bit those of
the diffusion pass. llama.cpp's CPU flash attention picks its kernel by the number of query rows
(ggml-cpu/ops.cpp: the tiled kernel from GGML_FA_TILE_Q = 64 rows, else the one-chunk kernel with
f16 accumulators), so a pass of fewer rows differs by that kernel's rounding: the test bounds it by
the spread llama.cpp shows between its own attention kernels on the very same full pass."""

from __future__ import annotations

import numpy as np
import pytest

from tools.ggufgen import CharVocab, write_random_gguf
from dlmcli.hub import BUNDLED_DIR

from .conftest import run_dlm

TIGHT = dict(rtol=1e-6, atol=1e-6)
TILE_Q = 64  # GGML_FA_TILE_Q: from this many query rows the CPU runs the tiled flash-attention kernel


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Random models of several layers: LLaDA (MHA) and Dream (GQA, q/k/v biases)."""
    d = tmp_path_factory.mktemp("kv")
    write_random_gguf(d / "llada.gguf", "llada", seed=11, n_layer=4, n_embd=64, n_head=4, std=0.3,
                      context_length=256)
    write_random_gguf(d / "dream.gguf", "dream", seed=12, n_layer=4, n_embd=64, n_head=4, n_head_kv=2,
                      std=0.3, context_length=256)
    return d


def _load(path):
    from dlmcli.runtime.kvcache import PrefixCache
    from dlmcli.runtime.llama import LlamaModel, Runtime

    rt = Runtime(path, n_threads=1)
    twin = LlamaModel(path, twin=True)
    return rt, twin, PrefixCache(twin, n_threads=1)


def _canvas(rng, n_prompt, n_gen):
    v = CharVocab()
    prompt = [v.bos_id] + list(rng.integers(v.first_char_id, v.first_char_id + 90, n_prompt - 1))
    gen = list(rng.integers(v.first_char_id, v.first_char_id + 90, n_gen))
    canvas = np.array(prompt + gen, dtype=np.int32)
    canvas[n_prompt + rng.choice(n_gen, n_gen // 2, replace=False)] = v.mask_id  # half still masked
    return canvas


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_twin_full_and_prefix_passes_equal_the_diffusion_pass(deep, arch):
    from dlmcli.runtime.kvcache import FLASH_ATTN_OFF, PrefixCache

    rt, twin, cache = _load(deep / f"{arch}.gguf")
    plain = PrefixCache(twin, n_threads=1, flash_attn=FLASH_ATTN_OFF)
    try:
        assert twin.twin_of == arch and twin.meta("general.architecture") == arch and twin.is_diffusion
        assert twin.n_vocab == rt.model.n_vocab
        rng = np.random.default_rng(0)
        canvas = _canvas(rng, 20, 100)
        want = np.array(rt.forward([canvas])[0])
        n = len(canvas)

        # A full pass of the twin is the diffusion pass, bit for bit.
        np.testing.assert_allclose(cache([canvas], [(0, n)])[0], want, **TIGHT)
        assert cache.full_passes == 1

        # The cache rebuilt at every step: the same canvas again, each block of 16 in turn (and the
        # window of a Dream block, shifted by one): only window + suffix are decoded.
        for w0 in (1, 19, 20, 36, 52):  # >= 64 query rows: the same attention kernel, the same logits
            assert n - w0 >= TILE_Q
            np.testing.assert_allclose(cache([canvas], [(w0, w0 + 16)])[0], want[w0:w0 + 16], **TIGHT)
        assert cache.full_passes == 1 and cache.partial_passes == 5

        # Fewer query rows switch llama.cpp to its other flash-attention kernel. With flash attention
        # off (one kernel whatever the row count) every window is bit-exact too.
        ref = np.array(plain([canvas], [(0, n)])[0])
        spread = np.abs(ref - want).max()  # what llama.cpp's two kernels differ by on the same pass
        assert 0 < spread < 0.05 * np.abs(want).max()
        for w0 in (1, 36, 68, 84, 104):
            np.testing.assert_allclose(plain([canvas], [(w0, w0 + 16)])[0], ref[w0:w0 + 16], **TIGHT)
        assert plain.full_passes == 1 and plain.partial_passes == 5
    finally:
        plain.close()
        cache.close()
        twin.close()
        rt.close()


def test_batches_of_different_lengths_and_cfg_pairs_stay_exact(deep):
    rt, twin, cache = _load(deep / "llada.gguf")
    try:
        rng = np.random.default_rng(1)
        a, b = _canvas(rng, 12, 48), _canvas(rng, 30, 48)
        uncond = a.copy()
        uncond[:12] = CharVocab().mask_id  # CFG's unconditional canvas
        batch = [a, b, uncond]
        want = [np.array(x) for x in rt.forward(batch)]
        cache(batch, [(0, len(x)) for x in batch])
        wins = [(8, 24), (26, 42), (8, 24)]
        got = cache(batch, wins)
        for g, w, (w0, w1) in zip(got, want, wins):
            np.testing.assert_allclose(g, w[w0:w1], **TIGHT)  # 3 x 52 query rows: the tiled kernel
        assert cache.partial_passes == 3

        # A commit before the window (a new block) makes that canvas a full pass again; the others
        # keep their cache. Dropping a canvas frees its slot.
        a2 = a.copy()
        a2[5] = CharVocab().char_id("x") if a2[5] == CharVocab().mask_id else CharVocab().mask_id
        want2 = [np.array(x) for x in rt.forward([a2, b])]
        got2 = cache([a2, b], wins[:2])
        for g, w, (w0, w1) in zip(got2, want2, wins):
            np.testing.assert_allclose(g, w[w0:w1], **TIGHT)
        assert cache.full_passes == 4 and cache.partial_passes == 4
    finally:
        cache.close()
        twin.close()
        rt.close()


def test_stale_prefix_is_the_only_approximation(deep):
    """Within a block, commits change the window but not the cached prefix K/V: the logits then
    differ from an exact pass (the approximation; how much it costs is measured in
    docs/kv-cache.md), and the next block's full pass is exact again."""
    rt, twin, cache = _load(deep / "llada.gguf")
    try:
        rng = np.random.default_rng(2)
        canvas = _canvas(rng, 20, 96)
        cache([canvas], [(36, 52)])  # full pass: prefix 0..35 cached with this canvas in view
        step = canvas.copy()
        step[36:52] = CharVocab().char_id("a")  # the block's commits
        want = np.array(rt.forward([step])[0])[36:52]
        approx = np.array(cache([step], [(36, 52)])[0])
        assert cache.partial_passes == 1
        assert not np.allclose(approx, want, rtol=1e-3, atol=1e-3)
        exact = np.array(cache([step], [(52, 68)])[0])  # next block: full pass again, exact
        assert cache.full_passes == 2
        np.testing.assert_allclose(exact, np.array(rt.forward([step])[0])[52:68], **TIGHT)
    finally:
        cache.close()
        twin.close()
        rt.close()


def test_twin_header_refuses_other_archs(gguf_dir):
    from dlmcli.errors import ModelError
    from dlmcli.runtime.twin import TwinHeader

    with pytest.raises(ModelError, match="no KV-cache twin"):
        TwinHeader(gguf_dir / "autoregressive.gguf")
    h = TwinHeader(gguf_dir / "dream.gguf")
    assert (h.arch, h.twin) == ("dream", "qwen2") and len(h.header) % 32 == 0


def test_twin_header_refuses_what_the_diffusion_graph_ignores(tmp_path):
    """llama.cpp's llada graph skips an attention-output bias its llama twin would add."""
    from dlmcli.errors import ModelError
    from tools.ggufgen import random_tensors, write_gguf
    from dlmcli.runtime.twin import TwinHeader

    t = random_tensors("llada", n_vocab=len(CharVocab()), n_layer=1, n_embd=32, n_head=2, n_ff=64)
    t["blk.0.attn_output.bias"] = np.zeros(32, np.float32)
    write_gguf(tmp_path / "bias.gguf", arch="llada", tensors=t, n_head=2, context_length=64)
    with pytest.raises(ModelError, match="attn_output.bias"):
        TwinHeader(tmp_path / "bias.gguf")


# --- the prefix cache through the API and the CLI --------------------------------------------------

def test_one_step_per_block_makes_the_cache_exact(gguf_dir):
    """Every step is a block start, so every pass is a full one: the same answer as without."""
    from dlmcli.api import Model

    with Model(gguf_dir / "llada.gguf") as off, Model(gguf_dir / "llada.gguf", cache="prefix") as on:
        kw = dict(gen_length=24, steps=3, block_length=8, seed=3, early_stop=False)
        a, b = off.generate("abc", **kw), on.generate("abc", **kw)
        assert a.tokens == b.tokens and b.steps == 3
        assert on.runtime.prefix.full_passes == 3 and on.runtime.prefix.partial_passes == 0


def test_batches_and_cfg_run_with_the_cache(gguf_dir):
    from dlmcli.api import Model

    with Model(gguf_dir / "llada.gguf", cache="prefix") as m:
        results = m.generate_batch(["ab", "a longer prompt"], gen_length=16, steps=8, block_length=8, cfg=1.0,
                                   seed=1, early_stop=False)
        pre = m.runtime.prefix
        # 2 blocks x (1 full + 3 partial) passes, each over 2 prompts x (cond, uncond) canvases.
        assert (pre.full_passes, pre.partial_passes) == (2 * 4, 6 * 4)
        for r in results:
            assert len(r.canvas) == len(r.prompt_tokens) + 16 and 3 not in r.canvas  # no mask left


@pytest.mark.skipif(not (BUNDLED_DIR / "tiny-llada.gguf").is_file(), reason="bundled tiny models missing")
def test_tiny_models_still_answer_with_the_cache():
    from dlmcli.api import load

    with load("tiny-llada", cache="prefix") as m:
        assert m.generate("reverse hello", seed=0).text == "olleh"
        assert m.runtime.prefix.partial_passes > 0
    with load("tiny-dream", cache="prefix") as m:
        assert m.generate("reverse hello", seed=0, schedule="block").text == "olleh"


@pytest.mark.slow
def test_cli_cache_flag(gguf_dir):
    r = run_dlm("generate", "reverse hello", "-m", "tiny-llada", "--cache", "prefix", "--no-visual")
    assert r.returncode == 0 and r.stdout.decode().strip() == "olleh"
    for args, want in ((["--cache", "dual"], "not possible over llama.cpp"),
                       (["--cache", "prefix", "--schedule", "timestep"], "add --schedule block"),
                       (["-m", str(gguf_dir / "autoregressive.gguf"), "--cache", "prefix"], "no KV-cache twin")):
        r = run_dlm("generate", "hi", "-m", "tiny-llada", *args)
        err = r.stderr.decode()
        assert r.returncode != 0 and err.startswith("Error: ") and want in err and err.count("\n") == 1, err
