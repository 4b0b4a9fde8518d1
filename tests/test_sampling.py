"""Sampling with temperature, top-p and top-k: the C kernel against the numpy definition, and both
against the distribution they must draw from (softmax of the filtered logits / T)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from dlmcli.engine import scoring

needs_kernel = pytest.mark.skipif(scoring._rowscore is None, reason="C kernel not built")
FILTERS = [(0, 1.0), (3, 1.0), (0, 0.7), (4, 0.8), (1, 1.0), (0, 0.05)]  # (top_k, top_p)
ALGORITHMS = ["low-confidence", "margin", "entropy"]


def kernel_sample(rows, algorithm, temperature, top_k, top_p, convention, u, threads=2, flags=0, work=None):
    n = len(rows)
    idx, val = np.empty(n, np.int64), np.empty(n)
    scoring._rowscore.sample(rows.logits, rows.index.astype(np.int64), rows.uncond, float(rows.scale), temperature,
                             top_k, top_p, convention == "raw", scoring.MODES.get(algorithm, 0), u, idx, val, threads,
                             work, flags)
    return idx, val


def short_and_general(rows, algorithm, temperature, top_k, top_p, convention, u):
    """The kernel's short top-p path alone (index -1 where it gives up) and its general path alone."""
    return tuple(kernel_sample(rows, algorithm, temperature, top_k, top_p, convention, u, flags=f)
                 for f in (scoring._rowscore.ONLY_PREFIX, scoring._rowscore.NO_PREFIX))


def filtered_probs(x: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    z = x.astype(np.float64) / temperature
    scoring.filter_logits(z, top_k, top_p)
    return scoring._softmax64(z)


@needs_kernel
@pytest.mark.parametrize("vocab", [2, 17, pytest.param(1000, marks=pytest.mark.slow),
                                   pytest.param(5000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("ties", [False, True])
def test_kernel_matches_the_numpy_definition_for_every_filter(vocab, ties):
    rng = np.random.default_rng(vocab + ties)
    for scale, cfg in ((0.7, False), (5.0, True)):
        logits = (rng.standard_normal((12, vocab)) * scale).astype(np.float32)
        if ties:
            logits = np.round(logits)  # equal logits across the top-p and top-k boundaries
        uncond = (rng.standard_normal((12, vocab)) * scale).astype(np.float32) if cfg else None
        rows = scoring.Rows(logits, np.array([3, 0, 11, 7, 7, 2, 9]), uncond, 1.5 if cfg else 1.0)
        for (top_k, top_p), temperature, convention, algorithm in itertools.product(
                FILTERS + [(vocab, 1.0), (50, 0.9)], [0.0, 0.3, 2.5], ["raw", "sampled"], ALGORITHMS):
            u = rng.random(len(rows)) if temperature > 0 else None
            want = scoring._sample_numpy(rows, algorithm, temperature, top_k, top_p, convention, u)
            got = kernel_sample(rows, algorithm, temperature, top_k, top_p, convention, u)
            case = (scale, top_k, top_p, temperature, convention, algorithm)
            assert (got[0] == want[0]).all(), case
            np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7, err_msg=str(case))  # float32 terms


@needs_kernel
def test_temperature_zero_with_filters_keeps_the_exact_kept_set():
    # The confidence at T 0 is 1 / (mass kept): a token too many or too few changes it visibly.
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((64, 5000)) * 2).astype(np.float32)
    rows = scoring.Rows(logits, np.arange(64))
    for top_p in (0.1, 0.5, 0.9, 0.95, 0.99):
        for top_k in (0, 7, 40, 400):  # 7, 40, 400: the small top-k path (no histogram)
            want = scoring._sample_numpy(rows, "low-confidence", 0.0, top_k, top_p, "sampled", None)
            got = kernel_sample(rows, "low-confidence", 0.0, top_k, top_p, "sampled", None)
            assert (got[0] == want[0]).all()
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


@needs_kernel
@pytest.mark.parametrize("top_p", [1.0, 0.99, 0.9, 0.3])
def test_small_top_k_with_ties_at_the_kth_value(top_p):
    # Many logits equal to the k-th largest, before and after it: the kept set's tie rule (all ties
    # of the k-th value under top-k; top-p's own cut among them) must match the numpy definition.
    rng = np.random.default_rng(int(top_p * 100))
    logits = np.round(rng.standard_normal((24, 3000)) * 1.5).astype(np.float32)
    logits[:, ::7] = np.float32(2.0)  # a wide tie near the top
    rows = scoring.Rows(logits, np.arange(24))
    for top_k, temperature, algorithm in itertools.product((1, 5, 40, 300), (0.0, 0.7), ALGORITHMS):
        u = rng.random(len(rows)) if temperature > 0 else None
        want = scoring._sample_numpy(rows, algorithm, temperature, top_k, top_p, "sampled", u)
        got = kernel_sample(rows, algorithm, temperature, top_k, top_p, "sampled", u)
        case = (top_k, top_p, temperature, algorithm)
        assert (got[0] == want[0]).all(), case
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7, err_msg=str(case))


@needs_kernel
@pytest.mark.parametrize("scale,temperatures", [(4.0, (0.0, 0.2, 0.7)), (1.5, (0.2, 0.3))])
def test_top_p_short_path_matches_the_general_path_and_numpy(scale, temperatures):
    # Rows whose kept set is a few tokens to a few hundred, in a vocabulary wider than the short
    # path's 2,048 slots (so it prunes), with ties: the short path must do every row here, and give
    # what the general path (histogram) and the numpy definition give.
    rng = np.random.default_rng(int(scale * 10))
    vocab = 30000
    logits = (rng.standard_normal((10, vocab)) * scale).astype(np.float32)
    if 0.0 in temperatures:  # the test's premise: rows with more tokens near the top than the slots
        assert ((logits > logits.max(axis=1, keepdims=True) - 11.1).sum(axis=1) > 2048).sum() >= 5
    logits[3] = np.round(logits[3])  # wide ties at every value
    logits[4, 100:110] = logits[4].max()  # a tie at the top
    uncond = (rng.standard_normal((10, vocab)) * scale).astype(np.float32)
    for cfg in (False, True):
        rows = scoring.Rows(logits, np.arange(10), uncond if cfg else None, 1.5 if cfg else 1.0)
        for (top_k, top_p), temperature, convention, algorithm in itertools.product(
                [(0, 0.95), (0, 0.5), (3, 0.9), (1, 0.99), (0, 0.05)], temperatures, ["sampled", "raw"], ALGORITHMS):
            u = rng.random(len(rows)) if temperature > 0 else None
            case = (cfg, top_k, top_p, temperature, convention, algorithm)
            short, general = short_and_general(rows, algorithm, temperature, top_k, top_p, convention, u)
            assert (short[0] >= 0).all(), ("the short path gave up on", np.flatnonzero(short[0] < 0), case)
            assert (short[0] == general[0]).all(), case
            np.testing.assert_allclose(short[1], general[1], rtol=1e-12, err_msg=str(case))
            if algorithm == "entropy" and not cfg:  # the definition itself (slow: a sort per row)
                want = scoring._sample_numpy(rows, algorithm, temperature, top_k, top_p, convention, u)
                assert (short[0] == want[0]).all(), case
                np.testing.assert_allclose(short[1], want[1], rtol=1e-5, atol=1e-7, err_msg=str(case))


@needs_kernel
def test_flat_rows_leave_the_short_path_and_get_the_same_answer():
    # Top-p 0.95 over a nearly flat row keeps most of the vocabulary: more than the short path holds.
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((6, 8000)) * 0.3).astype(np.float32)
    rows = scoring.Rows(logits, np.arange(6))
    u = rng.random(6)
    short = kernel_sample(rows, "entropy", 1.0, 0, 0.95, "sampled", u, flags=scoring._rowscore.ONLY_PREFIX)
    assert (short[0] == -1).all()
    got = kernel_sample(rows, "entropy", 1.0, 0, 0.95, "sampled", u)
    want = scoring._sample_numpy(rows, "entropy", 1.0, 0, 0.95, "sampled", u)
    assert (got[0] == want[0]).all()
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


@needs_kernel
def test_flat_rows_with_a_small_top_k_stay_on_the_short_path():
    # With top-k 40 the prefix only has to hold the 40 best: a flat row is pruned to its end instead
    # of given up, and the answer is the general path's and the definition's, ties at the k-th included.
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((6, 152064)) * 0.45).astype(np.float32)  # Dream's width: many prunes
    logits[2] = np.round(logits[2] * 8) / 8  # ties everywhere, at the 40th value too
    rows = scoring.Rows(logits, np.arange(6))
    for top_k, top_p, temperature, algorithm in itertools.product((1, 40, 1000), (0.95,), (0.0, 0.7), ALGORITHMS):
        u = rng.random(6) if temperature > 0 else None
        case = (top_k, top_p, temperature, algorithm)
        short, general = short_and_general(rows, algorithm, temperature, top_k, top_p, "sampled", u)
        want = scoring._sample_numpy(rows, algorithm, temperature, top_k, top_p, "sampled", u)
        assert (short[0][[0, 1, 3, 4, 5]] >= 0).all(), case  # only the row of ties may need the long way
        done = short[0] >= 0
        assert (short[0][done] == general[0][done]).all() and (general[0] == want[0]).all(), case
        np.testing.assert_allclose(short[1][done], general[1][done], rtol=1e-12, err_msg=str(case))
        np.testing.assert_allclose(general[1], want[1], rtol=1e-5, atol=1e-7, err_msg=str(case))


@needs_kernel
def test_the_scratch_is_grown_once_and_reused():
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((8, 3000)) * 2).astype(np.float32)
    rows = scoring.Rows(logits, np.arange(8))
    work = bytearray()
    a = kernel_sample(rows, "entropy", 0.5, 0, 0.9, "sampled", np.full(8, 0.5), work=work)
    size = len(work)
    assert size >= 3000 * 4 * 2  # at least the terms of the rows of two threads
    b = kernel_sample(rows, "entropy", 0.5, 0, 0.9, "sampled", np.full(8, 0.5), work=work)
    assert len(work) == size and (a[0] == b[0]).all() and (a[1] == b[1]).all()
    with pytest.raises(TypeError, match="bytearray"):
        kernel_sample(rows, "entropy", 0.5, 0, 0.9, "sampled", np.full(8, 0.5), work=np.zeros(10, np.uint8))
    held = memoryview(work)  # exported: as while another thread's call runs with the GIL released
    with pytest.raises(BufferError, match="in use"):
        kernel_sample(rows, "entropy", 0.5, 0, 0.9, "sampled", np.full(8, 0.5), work=work)
    held.release()


@needs_kernel
@pytest.mark.parametrize("flags", [0, 1])  # 1: NO_PREFIX
def test_rows_built_against_the_selection_are_still_exact(flags):
    # An organ-pipe row (rising then falling) drives median-of-three quickselect quadratic; the
    # selection then sorts what is left. Huge temperatures: 1/T would round to 0 in float32.
    vocab = 20000
    pipe = np.concatenate([np.linspace(0, 1e-3, vocab // 2), np.linspace(1e-3, 0, vocab // 2)]).astype(np.float32)
    spiky = np.array([1, -np.inf, 2, 0.5, -np.inf, 2], np.float32)
    u = np.array([0.3])
    for row, temperature, top_k, top_p in ((pipe, 1.0, 0, 0.5), (pipe, 1.0, 5000, 0.99), (pipe, 0.0, 0, 0.3),
                                           (spiky, 1e46, 0, 1.0), (spiky, 1e46, 2, 0.9)):
        rows = scoring.Rows(row[None, :], np.arange(1))
        uu = u if temperature > 0 else None
        got = kernel_sample(rows, "entropy", temperature, top_k, top_p, "sampled", uu, flags=flags)
        want = scoring._sample_numpy(rows, "entropy", temperature, top_k, top_p, "sampled", uu)
        assert got[0] == want[0], (temperature, top_k, top_p)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", ["c", "numpy"])
@pytest.mark.parametrize("top_k,top_p", FILTERS)
@pytest.mark.parametrize("temperature", [0.4, 1.6])
def test_draws_follow_the_filtered_tempered_softmax(path, top_k, top_p, temperature, monkeypatch):
    if path == "c" and scoring._rowscore is None:
        pytest.skip("C kernel not built")
    if path == "numpy":
        monkeypatch.setenv("DLM_SCORING", "numpy")
    rng = np.random.default_rng(int(temperature * 10) + 100 * top_k + int(1000 * top_p))
    vocab, draws = 12, 20000
    logits = (rng.standard_normal((3, vocab)) * 2).astype(np.float32)
    logits[2, 5] = logits[2, 6] = logits[2].max()  # a tie at the top
    for position in range(3):
        rows = scoring.Rows(logits, np.full(draws, position))  # one position, drawn 20,000 times
        idx, _ = scoring.sample(rows, "low-confidence", temperature, top_k, top_p, "sampled",
                                np.random.default_rng(position), threads=2)
        p = filtered_probs(logits[position:position + 1], temperature, top_k, top_p)[0]
        counts = np.bincount(idx, minlength=vocab)
        assert counts[p == 0].sum() == 0, "a filtered-out token was drawn"
        big = p * draws >= 5  # chi-square wants >= 5 expected per cell: the rest share one cell
        observed = np.append(counts[big], counts[~big].sum())
        expected = np.append(p[big], p[~big].sum()) * draws
        keep = expected > 0
        if keep.sum() < 2:
            assert observed[keep].sum() == draws
            continue
        result = stats.chisquare(observed[keep], expected[keep])
        assert result.pvalue > 1e-4, (position, counts, p * draws)


def test_one_uniform_per_row_and_seeded():
    logits = np.random.default_rng(0).standard_normal((30, 100)).astype(np.float32)
    rng = np.random.default_rng(7)
    a = scoring.sample(logits, "low-confidence", 0.8, 0, 0.9, "sampled", rng)
    assert rng.bit_generator.state == _after(np.random.default_rng(7), 30)
    b = scoring.sample(logits, "low-confidence", 0.8, 0, 0.9, "sampled", np.random.default_rng(7))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    rng = np.random.default_rng(7)
    scoring.sample(logits, "low-confidence", 0.0, 0, 0.9, "sampled", rng)  # temperature 0 draws nothing
    assert rng.bit_generator.state == np.random.default_rng(7).bit_generator.state


def _after(rng: np.random.Generator, n: int) -> dict:
    rng.random(n)
    return rng.bit_generator.state


@needs_kernel
def test_raw_convention_scores_the_untempered_unfiltered_softmax():
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((20, 300)) * 3).astype(np.float32)
    rows = scoring.Rows(logits, np.arange(20))
    u = rng.random(20)
    for algorithm in ALGORITHMS:
        idx, val = kernel_sample(rows, algorithm, 0.5, 5, 0.8, "raw", u)
        p = scoring._softmax64(logits.astype(np.float64))
        np.testing.assert_allclose(val, scoring._score_from_probs(p, idx, algorithm), rtol=1e-5, atol=1e-7)
        kept = filtered_probs(logits, 0.5, 5, 0.8)
        assert (kept[np.arange(20), idx] > 0).all()
