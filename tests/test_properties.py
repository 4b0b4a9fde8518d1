"""Property tests over the parameter space, on real llama.cpp with small random-weight models."""

from __future__ import annotations

import contextlib
import gc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlmcli.api import Model
from dlmcli.engine.params import ALGORITHMS, GenerationParams
from dlmcli.hub import bundled_models


@pytest.fixture(scope="module")
def models(gguf_dir):
    with Model(gguf_dir / "llada.gguf") as a, Model(gguf_dir / "dream.gguf") as b:
        yield {"llada": a, "dream": b}


@st.composite
def param_sets(draw):
    schedule = draw(st.sampled_from(["block", "timestep"]))
    n_blocks = draw(st.sampled_from([1, 2, 4]))
    block_length = draw(st.sampled_from([1, 2, 4]))
    gen_length = n_blocks * block_length if schedule == "block" else draw(st.integers(1, 12))
    steps = n_blocks * draw(st.integers(1, 4)) if schedule == "block" else draw(st.integers(1, 14))
    algorithm = draw(st.sampled_from(ALGORITHMS))
    dynamic = None if algorithm in ("entropy", "origin") else draw(st.sampled_from([None, "threshold", "factor"]))
    return dict(
        gen_length=gen_length, steps=steps, block_length=block_length, schedule=schedule,
        algorithm=algorithm,
        alg_temp=draw(st.sampled_from([0.0, 0.5])),
        temperature=draw(st.sampled_from([0.0, 0.3, 1.0])),
        top_k=draw(st.sampled_from([0, 1, 5])),
        top_p=draw(st.sampled_from([1.0, 0.9, 0.3])),
        cfg=draw(st.sampled_from([0.0, 0.0, 1.0])),
        seed=draw(st.integers(0, 2**32)),
        threshold=draw(st.floats(0.05, 1.0)) if dynamic == "threshold" else None,
        factor=draw(st.floats(0.1, 4.0)) if dynamic == "factor" else None,
        early_stop=draw(st.booleans()),
    ), draw(st.sampled_from(["llada", "dream"])), draw(st.text("abcdefgh 0123=", min_size=0, max_size=8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(param_sets())
def test_any_valid_setting_runs_cleanly(models, case):
    kwargs, arch, prompt = case
    check_run(models[arch], kwargs, prompt)


BUNDLED = bundled_models()


@pytest.fixture(scope="module")
def tiny_models():
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(Model(path)) for name, path in BUNDLED.items()}


@pytest.mark.skipif(not BUNDLED, reason="no bundled tiny models in dlmcli/models yet")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(param_sets(), st.sampled_from(sorted(BUNDLED) or ["none"]),
       st.sampled_from(["reverse hello", "add 12 30", "reverse abcdefghij", "", "sort 3 1 2"]))
def test_any_valid_setting_runs_cleanly_on_the_bundled_tiny_models(tiny_models, case, name, prompt):
    """The same properties on trained weights, whose confidences look like a real model's."""
    kwargs, _arch, _prompt = case
    check_run(tiny_models[name], kwargs, prompt)


def check_run(model, kwargs: dict, prompt: str) -> None:
    """Never a crash or a mask in the output; commits are final; exactly `steps` passes unless cut short."""
    params = GenerationParams(**kwargs).validate()
    gen = model.denoise(prompt, params=params)
    mask = model.vocab_info.mask_id
    prev = gen.initial_canvas.copy()
    n = 0
    for step in gen:
        n += 1
        committed = prev != mask
        assert np.array_equal(step.canvas[committed], prev[committed]), "a committed token changed"
        assert np.array_equal(step.canvas[: gen.gen_start], gen.initial_canvas[: gen.gen_start])
        prev = step.canvas.copy()
    result = gen.result()
    assert mask not in result.tokens
    assert mask not in result.canvas
    dynamic = kwargs["threshold"] is not None or kwargs["factor"] is not None
    if not kwargs["early_stop"] and not dynamic:
        assert result.steps == n == kwargs["steps"]
    else:
        assert 1 <= result.steps <= kwargs["steps"]
    assert result.finish_reason in ("eos", "length")


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_hundred_generations_do_not_grow_memory(gguf_dir):
    with Model(gguf_dir / "llada.gguf") as m:
        for _ in range(10):  # warm-up: context, batch, caches reach their size
            m.generate("reverse abc", gen_length=16)
        gc.collect()
        before = _rss_kib()
        for i in range(100):
            m.generate(f"reverse abc{i}", gen_length=16, temperature=0.5, seed=i)
        gc.collect()
        grown = _rss_kib() - before
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 100 generations"


@pytest.mark.slow
def test_loading_and_closing_repeatedly_does_not_leak(gguf_dir):
    for _ in range(5):
        with Model(gguf_dir / "llada.gguf") as m:
            m.generate("x", gen_length=4)
    gc.collect()
    before = _rss_kib()
    for _ in range(30):
        with Model(gguf_dir / "llada.gguf") as m:
            m.generate("x", gen_length=4)
    gc.collect()
    assert _rss_kib() - before < 16 * 1024


def test_close_order_context_before_model(gguf_dir, monkeypatch):
    from dlmcli.runtime import llama as rt

    calls = []
    real_free, real_model_free, real_batch_free = rt.lib.llama_free, rt.lib.llama_model_free, rt.lib.llama_batch_free
    monkeypatch.setattr(rt.lib, "llama_free", lambda p: (calls.append("context"), real_free(p)))
    monkeypatch.setattr(rt.lib, "llama_model_free", lambda p: (calls.append("model"), real_model_free(p)))
    monkeypatch.setattr(rt.lib, "llama_batch_free", lambda b: (calls.append("batch"), real_batch_free(b)))
    m = Model(gguf_dir / "llada.gguf")
    m.generate("x", gen_length=4)
    m.close()
    m.close()
    assert calls == ["batch", "context", "model"]


def test_failed_metadata_check_frees_the_model(gguf_dir, monkeypatch):
    from dlmcli.errors import ModelError
    from dlmcli.runtime import llama as rt

    calls = []
    real_model_free = rt.lib.llama_model_free
    monkeypatch.setattr(rt.lib, "llama_model_free", lambda p: (calls.append("model"), real_model_free(p)))
    with pytest.raises(ModelError):
        Model(gguf_dir / "autoregressive.gguf")
    assert calls == ["model"]
