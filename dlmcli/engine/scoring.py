"""Token choice and confidence for the rows (canvas positions) that compete at one step.

Pure numpy on float32 logits rows ``[n, vocab]``. Two conventions, both from the authors' code:
- ``raw`` (LLaDA ``generate.py``): tokens are drawn with Gumbel noise in float64 from the tempered
  logits, but confidence is the probability of that token under the *un-noised, untempered* full
  softmax.
- ``sampled`` (Dream ``sample_tokens``): temperature, top-p and top-k shape one distribution; the
  token is drawn from it and its confidence is measured on it.
At temperature 0 with no top-k/top-p both reduce to argmax and the full-vocabulary softmax.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Dream adds this inside the log of its entropy confidence; kept so scores match its code.
ENTROPY_EPS = 1e-10

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def set_threads(n: int) -> None:
    """Split row-wise work over n threads (numpy releases the GIL inside ufuncs)."""
    global _POOL, _POOL_SIZE
    n = max(1, int(n))
    if n == _POOL_SIZE:
        return
    if _POOL is not None:
        _POOL.shutdown(wait=False)
    _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="dlm-score") if n > 1 else None
    _POOL_SIZE = n


def _rowwise(fn, rows: np.ndarray, *extra):
    """Apply fn to row chunks in parallel; fn returns a tuple of per-row arrays."""
    n = rows.shape[0]
    if _POOL is None or n < 2 or rows.size < 1 << 18:
        return fn(rows, *extra)
    parts = min(_POOL_SIZE, n)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    futures = [
        _POOL.submit(fn, rows[a:b], *(e[a:b] for e in extra)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a
    ]
    results = [f.result() for f in futures]
    return tuple(np.concatenate(col) for col in zip(*results))


def _greedy_stats(rows: np.ndarray, want_margin: bool, want_entropy: bool):
    """argmax, its softmax probability, top1-top2 margin and Dream's entropy score, one pass."""
    idx = np.argmax(rows, axis=1)
    top = rows[np.arange(rows.shape[0]), idx]
    e = rows - top[:, None]
    np.exp(e, out=e)
    z = e.sum(axis=1, dtype=np.float64)
    conf = 1.0 / z
    margin = entropy = None
    if want_margin:
        second = np.partition(rows, -2, axis=1)[:, -2] if rows.shape[1] > 1 else top
        margin = conf - np.exp((second - top).astype(np.float64)) / z
    if want_entropy:
        p = e / z[:, None].astype(np.float32)
        entropy = (p * np.log(p + np.float32(ENTROPY_EPS))).sum(axis=1, dtype=np.float64)
    empty = np.zeros(0)
    return idx, conf, margin if margin is not None else empty, entropy if entropy is not None else empty


def greedy(rows: np.ndarray, algorithm: str):
    """Fast path (temperature 0, no filters): tokens and confidences without copying the logits."""
    want_margin = algorithm == "margin"
    want_entropy = algorithm == "entropy"
    idx, conf, margin, entropy = _rowwise(
        lambda r: _greedy_stats(np.asarray(r, dtype=np.float32), want_margin, want_entropy), rows
    )
    if want_margin:
        return idx, margin
    if want_entropy:
        return idx, entropy
    return idx, conf


def filter_logits(z: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Dream's order: top-p first, then top-k; removed entries become -inf (in place, float64)."""
    if 0 < top_p < 1:
        order = np.argsort(-z, axis=1, kind="stable")
        sorted_z = np.take_along_axis(z, order, axis=1)
        p = np.exp(sorted_z - sorted_z[:, :1])
        p /= p.sum(axis=1, keepdims=True)
        cum = np.cumsum(p, axis=1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].copy()  # keep the first token that crosses top_p
        remove[:, 0] = False
        np.put_along_axis(z, order, np.where(remove, -np.inf, sorted_z), axis=1)
    if top_k > 0 and top_k < z.shape[1]:
        kth = -np.partition(-z, top_k - 1, axis=1)[:, top_k - 1]
        z[z < kth[:, None]] = -np.inf
    return z


def _softmax64(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p


def _score_from_probs(p: np.ndarray, idx: np.ndarray, algorithm: str) -> np.ndarray:
    r = np.arange(p.shape[0])
    if algorithm == "margin":
        two = -np.partition(-p, 1, axis=1)[:, :2] if p.shape[1] > 1 else np.concatenate([p, p * 0], 1)
        return two[:, 0] - two[:, 1]
    if algorithm == "entropy":
        return (p * np.log(p + ENTROPY_EPS)).sum(axis=1)
    return p[r, idx]


def sample(rows: np.ndarray, algorithm: str, temperature: float, top_k: int, top_p: float,
           convention: str, rng: np.random.Generator):
    """Tokens and confidences for rows ``[n, V]`` (float32 logits, left untouched).

    Randomness drawn, in this order: a float64 uniform array ``[n, V]`` for Gumbel noise when
    temperature > 0. Nothing when temperature is 0.
    """
    if temperature == 0 and top_k == 0 and top_p >= 1:
        return greedy(rows, algorithm)
    z = np.array(rows, dtype=np.float64)
    if temperature > 0:
        z /= temperature
    filter_logits(z, top_k, top_p)
    if temperature > 0:
        u = rng.random(z.shape)
        # argmax(exp(l) / (-log u)^T) == argmax(l/T - log(-log u)): LLaDA's float64 Gumbel-max.
        idx = np.argmax(z - np.log(-np.log(u)), axis=1)
    else:
        idx = np.argmax(z, axis=1)
    if convention == "raw":
        p = _softmax64(np.asarray(rows, dtype=np.float64))
    else:
        p = _softmax64(z)
    return idx, _score_from_probs(p, idx, algorithm)
