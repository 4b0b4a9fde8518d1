"""The C scoring kernel (dlmcli/engine/_rowscore.c) against the numpy path it replaces."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dlmcli.engine import scoring

kernel = scoring._rowscore
needs_kernel = pytest.mark.skipif(kernel is None, reason="C kernel not built")
MODES = {0: "conf", 1: "margin", 2: "entropy"}


def both(logits, index, uncond=None, scale=1.0, mode=0):
    """(kernel idx, kernel score), (numpy idx, numpy score) for the same rows."""
    rows = scoring.Rows(logits, np.asarray(index), uncond, scale)
    idx = np.empty(len(index), np.int64)
    val = np.empty(len(index))
    kernel.score(logits, np.asarray(index, np.int64), uncond, scale, mode, idx, val)
    with np.errstate(invalid="ignore"):
        ni, conf, margin, entropy = scoring._greedy_part_numpy(rows, 0, len(index), mode == 1, mode == 2)
    return (idx, val), (ni, (conf, margin, entropy)[mode])


@pytest.mark.skipif(sys.platform == "win32", reason="the kernel is written for GCC and Clang")
def test_the_install_built_the_kernel():
    # pip install -e . compiles it (setup.py); a silent fallback would only show as a slow step.
    assert kernel is not None, "dlmcli/engine/_rowscore.c was not compiled: run pip install -e . again"
    assert scoring.kernel_name() == "c"


@needs_kernel
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("vocab", [1, 2, 15, 16, 17, 128, 1000, 4096, 126464])  # 128+: float32 block partials
@pytest.mark.parametrize("cfg", [False, True])
def test_kernel_matches_numpy(mode, vocab, cfg):
    rng = np.random.default_rng(vocab * 7 + mode)
    logits = (rng.standard_normal((9, vocab)) * 4).astype(np.float32)
    uncond = (rng.standard_normal((9, vocab)) * 4).astype(np.float32) if cfg else None
    index = [8, 0, 3, 3, 5]
    (ki, kv), (ni, nv) = both(logits, index, uncond, 1.5 if cfg else 1.0, mode)
    assert (ki == ni).all()
    # float32 exponentials from two implementations (about 1 ulp each), float64 sums
    np.testing.assert_allclose(kv, nv, rtol=3e-7, atol=1e-9)


@needs_kernel
def test_argmax_is_the_first_of_equal_maxima_in_every_lane_position():
    vocab = 100
    logits = np.zeros((vocab, vocab), np.float32)
    other = (np.arange(vocab) * 37 + 11) % vocab
    other[::2] = (np.arange(vocab)[::2] + 16) % vocab  # same SIMD lane, one vector later or earlier
    for r in range(vocab):
        logits[r, r] = 5.0
        logits[r, other[r]] = 5.0  # a second, equal maximum before or after
    (ki, _), (ni, _) = both(logits, list(range(vocab)))
    assert (ki == ni).all()
    assert (ki == np.minimum(np.arange(vocab), other)).all()


@needs_kernel
def test_extreme_values():
    row = np.full(40, -1e30, np.float32)
    row[7] = 0.0
    wide = np.linspace(-200, 0, 40, dtype=np.float32)  # most terms far below exp's range
    neg_inf = np.full(40, -np.inf, np.float32)
    neg_inf[3] = 1.0
    logits = np.stack([row, wide, neg_inf])
    for mode in MODES:
        (ki, kv), (ni, nv) = both(logits, [0, 1, 2], mode=mode)
        assert (ki == ni).all() and list(ki) == [7, 39, 3]
        np.testing.assert_allclose(kv, nv, rtol=2e-6, atol=1e-7)
    (_, kv), _ = both(logits, [0, 1, 2])
    assert kv[0] == 1.0 and kv[2] == 1.0


@needs_kernel
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_infinite_logit_gives_a_nan_score(mode, bad):
    logits = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    logits[1, 20] = bad
    (ki, kv), (ni, nv) = both(logits, [0, 1, 2], mode=mode)
    assert np.isnan(kv[1]) and np.isnan(nv[1])
    assert np.isfinite(kv[[0, 2]]).all()
    assert (ki == ni).all()  # numpy's argmax: the first NaN (or the first +inf)


@needs_kernel
def test_the_kernel_refuses_what_it_cannot_read():
    good = np.zeros((4, 8), np.float32)
    idx, val = np.empty(1, np.int64), np.empty(1)
    with pytest.raises(TypeError):
        kernel.score(good.astype(np.float64), np.zeros(1, np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(TypeError):
        kernel.score(good.ravel(), np.zeros(1, np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(IndexError):
        kernel.score(good, np.array([4], np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(IndexError):
        kernel.score(good, np.array([-1], np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(ValueError):
        kernel.score(good, np.zeros(2, np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(ValueError):
        kernel.score(good, np.zeros(1, np.int64), np.zeros((2, 8), np.float32), 1.0, 0, idx, val)
    with pytest.raises(ValueError):
        kernel.score(good, np.zeros(1, np.int64), None, 1.0, 3, idx, val)
    with pytest.raises((TypeError, ValueError, BufferError)):
        kernel.score(good[:, ::2], np.zeros(1, np.int64), None, 1.0, 0, idx, val)
    with pytest.raises(TypeError):  # a float64 index, swapped outputs, an int32 uncond
        kernel.score(good, np.zeros(1), None, 1.0, 0, idx, val)
    with pytest.raises(TypeError):
        kernel.score(good, np.zeros(1, np.int64), None, 1.0, 0, val, idx)
    with pytest.raises(TypeError):
        kernel.score(good, np.zeros(1, np.int64), np.zeros((4, 8), np.int32), 1.0, 0, idx, val)
    with pytest.raises(ValueError):  # same size, other shape
        kernel.score(good, np.zeros(1, np.int64), np.zeros((8, 4), np.float32), 1.0, 0, idx, val)
    with pytest.raises(ValueError):
        kernel.score(np.zeros((4, 0), np.float32), np.zeros(1, np.int64), None, 1.0, 0, idx, val)


@needs_kernel
def test_an_output_overlapping_the_index_cannot_send_reads_out_of_bounds():
    buf = np.zeros(3, np.int64)
    logits = np.zeros((4, 16), np.float32)
    # out_val overwrites index[1] while rows are read: the kernel works from its own checked copy
    kernel.score(logits, buf[0:2], None, 1.0, 0, np.empty(2, np.int64), buf[1:3].view(np.float64))
    assert buf[1:3].view(np.float64)[0] == 1 / 16


@needs_kernel
def test_greedy_uses_the_kernel_and_falls_back_for_strided_rows(monkeypatch):
    logits = np.random.default_rng(3).standard_normal((6, 300)).astype(np.float32)
    calls = []
    real = kernel.score
    monkeypatch.setattr(kernel, "score", lambda *a: calls.append(1) or real(*a))
    i1, c1 = scoring.greedy(scoring.Rows(logits, [1, 4]), "low-confidence")
    assert calls, "the contiguous float32 case should use the kernel"
    calls.clear()
    i2, c2 = scoring.greedy(scoring.Rows(np.asfortranarray(logits), [1, 4]), "low-confidence")
    assert not calls
    assert (i1 == i2).all()
    np.testing.assert_allclose(c1, c2, rtol=2e-6)
    monkeypatch.setenv("DLM_SCORING", "numpy")
    assert scoring.kernel_name() == "numpy"
    scoring.greedy(scoring.Rows(logits, [1, 4]), "low-confidence")
    assert not calls


@needs_kernel
def test_threads_give_the_same_bits():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((64, 1 << 16)).astype(np.float32)  # 4M logits: 4 threads
    rows = scoring.Rows(logits, rng.permutation(64)[:50])
    for algorithm in ("entropy", "margin", "low-confidence"):
        for cfg in (None, rng.standard_normal(logits.shape).astype(np.float32)):
            r = scoring.Rows(logits, rows.index, cfg, 2.0)
            one = scoring.greedy(r, algorithm, 1)
            four = scoring.greedy(r, algorithm, 4)
            assert (one[0] == four[0]).all() and (one[1] == four[1]).all()
            for temperature, top_k, top_p in ((0.7, 0, 1.0), (0.0, 0, 0.9), (0.5, 40, 0.95)):
                one = scoring.sample(r, algorithm, temperature, top_k, top_p, "sampled", np.random.default_rng(1), 1)
                four = scoring.sample(r, algorithm, temperature, top_k, top_p, "sampled", np.random.default_rng(1), 4)
                assert (one[0] == four[0]).all() and (one[1] == four[1]).all()


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place between got and the float64 exact values."""
    ref = exact.astype(np.float32)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(ref)).astype(np.float64)


@needs_kernel
def test_the_kernels_exp_and_log_are_within_two_ulp():
    x = np.linspace(-87, 0, 2_000_001, dtype=np.float32)
    out = np.empty_like(x)
    kernel.elementwise(0, x, out)
    assert ulps(out, np.exp(x.astype(np.float64))).max() <= 2
    below = np.array([-87.01, -100, -1e30, -np.inf], np.float32)
    kernel.elementwise(0, below, below)  # < 1.7e-38: nothing beside a softmax sum >= 1, and no denormals
    assert (below == 0).all()
    nan = np.array([np.nan], np.float32)
    kernel.elementwise(0, nan, nan)
    assert np.isnan(nan).all()
    p = np.geomspace(1e-10, 1.0, 2_000_001).astype(np.float32)
    kernel.elementwise(1, p, out)
    exact = np.log(p.astype(np.float64))
    assert (np.abs(out - exact) <= 2 * np.spacing(np.abs(exact.astype(np.float32))) + 1e-12).all()


@needs_kernel
@pytest.mark.parametrize("vocab", [1, 2, 3, 16, 17, 33, 1000])
def test_margin_runner_up_with_ties_in_any_lane(vocab):
    # The kernel finds the runner-up in the sum's read (the argmax's lane rescanned): equal maxima
    # give margin 0, and any lane or the unvectorised tail may hold it.
    rng = np.random.default_rng(vocab)
    logits = np.round(rng.standard_normal((40, vocab)) * 2).astype(np.float32)
    (ki, kv), (ni, nv) = both(logits, list(range(40)), mode=1)
    assert (ki == ni).all()
    np.testing.assert_allclose(kv, nv, rtol=3e-7, atol=1e-9)
