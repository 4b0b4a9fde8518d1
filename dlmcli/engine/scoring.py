"""Token choice and confidence for the rows (canvas positions) that compete at one step.

Pure numpy on float32 logits rows ``[n, vocab]``. Two conventions, both from the authors' code:
- ``raw`` (LLaDA ``generate.py``): tokens are drawn with Gumbel noise in float64 from the tempered
  logits, but confidence is the probability of that token under the *un-noised, untempered* full
  softmax.
- ``sampled`` (Dream ``sample_tokens``): temperature, top-p and top-k shape one distribution; the
  token is drawn from it and its confidence is measured on it.
At temperature 0 with no top-k/top-p both reduce to argmax and the full-vocabulary softmax.

That greedy case is the per-step hot loop. It runs in ``_rowscore`` (a small C extension built at
install time: one read of each row, vectorised exp) when it is built, else in numpy with the same
arithmetic (float32 exponentials, float64 sums); ``DLM_SCORING=numpy`` forces the numpy path.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from dlmcli.engine import _rowscore
except ImportError:  # not built (no compiler at install time): the numpy path below does the same
    _rowscore = None

# Dream adds this inside the log of its entropy confidence; kept so scores match its code.
ENTROPY_EPS = 1e-10

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 1

# Rows are reduced a few at a time in a buffer of about this size, so that after the one read from
# the logits (main memory) the argmax/subtract/exp/sum passes hit the CPU cache.
CHUNK_BYTES = 1 << 21

# Logits per scoring thread, at least (1M: about 0.6 ms of the C kernel on one core).
MIN_PER_THREAD = 1 << 20


def default_threads() -> int:
    """Scoring threads when --threads is not given: the CPUs this process may use. Work is split
    only as far as MIN_PER_THREAD allows, so few rows still run on few threads."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def set_threads(n: int) -> None:
    """Split row-wise work over up to n threads."""
    global _POOL, _POOL_SIZE
    n = max(1, int(n))
    if n == _POOL_SIZE:
        return
    if _POOL is not None:
        _POOL.shutdown(wait=False)
    _POOL = None  # made when first needed: the OpenMP kernel needs none
    _POOL_SIZE = n


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="dlm-score")
    return _POOL


class Rows:
    """The logits rows that compete at one step, read in place (never copied as a whole).

    Row j is ``logits[index[j]]``, or with classifier-free guidance
    ``uncond[index[j]] + scale * (logits[index[j]] - uncond[index[j]])`` (LLaDA's formula, float32).
    """

    def __init__(self, logits: np.ndarray, index: np.ndarray, uncond: np.ndarray | None = None,
                 scale: float = 1.0):
        self.logits = logits
        self.index = np.asarray(index, dtype=np.intp)
        self.uncond = uncond
        self.scale = np.float32(scale)
        self.shape = (self.index.size, logits.shape[1])

    def __len__(self) -> int:
        return self.index.size

    def gather(self, a: int, b: int, out: np.ndarray | None = None, tmp: np.ndarray | None = None) -> np.ndarray:
        """Rows a..b-1 as a float32 array (written into ``out`` when given)."""
        idx = self.index[a:b]
        out = np.take(self.logits, idx, axis=0, out=out)
        if self.uncond is not None:
            un = np.take(self.uncond, idx, axis=0, out=tmp)
            out -= un
            out *= self.scale
            out += un
        return out

    def array(self) -> np.ndarray:
        return self.gather(0, len(self))

    def subset(self, which: np.ndarray) -> "Rows":
        """The rows selected by a boolean mask or index array, still read in place."""
        return Rows(self.logits, self.index[which], self.uncond, float(self.scale))

    @classmethod
    def of(cls, rows) -> "Rows":
        if isinstance(rows, Rows):
            return rows
        rows = np.asarray(rows, dtype=np.float32)
        return cls(rows, np.arange(rows.shape[0]))


def kernel_name() -> str:
    """Which implementation scores greedy rows: 'c' or 'numpy'."""
    return "c" if _use_kernel() else "numpy"


def _use_kernel() -> bool:
    return _rowscore is not None and os.environ.get("DLM_SCORING", "").lower() != "numpy"


def _kernel_ok(a: np.ndarray | None) -> bool:
    return a is None or (a.dtype == np.float32 and a.ndim == 2 and a.flags.c_contiguous)


def _kernel_reads(rows: Rows) -> bool:
    """The C kernel is on and can read these rows where they lie."""
    return _use_kernel() and _kernel_ok(rows.logits) and _kernel_ok(rows.uncond)


def _greedy_part(rows: Rows, a: int, b: int, want_margin: bool, want_entropy: bool, threads: int = 1):
    """argmax and one score for rows a..b-1 (see _greedy_part_numpy): the C kernel when usable
    (on ``threads`` OpenMP threads when it has them)."""
    if not _kernel_reads(rows):
        return _greedy_part_numpy(rows, a, b, want_margin, want_entropy)
    n = b - a
    idx = np.empty(n, np.int64)
    val = np.empty(n)
    mode = 1 if want_margin else 2 if want_entropy else 0
    _rowscore.score(rows.logits, np.ascontiguousarray(rows.index[a:b], dtype=np.int64), rows.uncond,
                    float(rows.scale), mode, idx, val, threads)
    empty = np.zeros(0)
    if want_margin:
        return idx, empty, val, empty
    if want_entropy:
        return idx, empty, empty, val
    return idx, val, empty, empty


def _greedy_part_numpy(rows: Rows, a: int, b: int, want_margin: bool, want_entropy: bool):
    """argmax, its softmax probability, top1-top2 margin and Dream's entropy score for rows a..b-1.

    Works through the rows a few at a time: np.take copies them (one read of main memory) into a
    reused cache-sized buffer where argmax/subtract/exp/sum run. Per row the arithmetic is the same
    whatever the chunking (float32 exp, float64 sums), so results do not depend on threads.
    Measured on the H100 host (docs/performance.md): faster with threads than reading runs of
    rows in place, and the float64-cast sum scales best of the sums tried.
    """
    n, vocab = b - a, rows.shape[1]
    per = max(1, min(n, CHUNK_BYTES // (4 * vocab)))
    buf = np.empty((per, vocab), np.float32)
    tmp = np.empty_like(buf) if rows.uncond is not None else None
    idx = np.empty(n, np.intp)
    conf = np.empty(n)
    margin = np.empty(n) if want_margin else np.zeros(0)
    entropy = np.empty(n) if want_entropy else np.zeros(0)
    for c in range(0, n, per):
        m = min(per, n - c)
        e = rows.gather(a + c, a + c + m, buf[:m], None if tmp is None else tmp[:m])
        r = np.arange(m)
        i = e.argmax(axis=1)
        top = e[r, i]
        if want_margin:
            if vocab > 1:
                e[r, i] = -np.inf
                second = e.max(axis=1)
                e[r, i] = top
            else:
                second = top
        np.subtract(e, top[:, None], out=e)
        np.exp(e, out=e)
        z = e.sum(axis=1, dtype=np.float64)
        idx[c:c + m] = i
        conf[c:c + m] = 1.0 / z
        if want_margin:
            margin[c:c + m] = conf[c:c + m] - np.exp((second - top).astype(np.float64)) / z
        if want_entropy:
            np.divide(e, z[:, None].astype(np.float32), out=e)
            entropy[c:c + m] = (e * np.log(e + np.float32(ENTROPY_EPS))).sum(axis=1, dtype=np.float64)
    return idx, conf, margin, entropy


def greedy(rows, algorithm: str):
    """Fast path (temperature 0, no filters): tokens and confidences, reading each logit once.

    ``rows``: a ``Rows`` or a float32 array ``[n, V]``. Rows are split over the scoring threads.
    """
    rows = Rows.of(rows)
    want_margin = algorithm == "margin"
    want_entropy = algorithm == "entropy"
    n = len(rows)
    # A thread only pays for itself with enough logits to reduce (a handoff costs tens of µs).
    parts = max(1, min(_POOL_SIZE, n, n * rows.shape[1] // MIN_PER_THREAD))
    if parts <= 1 or (_kernel_reads(rows) and _rowscore.OPENMP):
        idx, conf, margin, entropy = _greedy_part(rows, 0, n, want_margin, want_entropy, parts)
    else:
        bounds = np.linspace(0, n, parts + 1).astype(int)
        futures = [_pool().submit(_greedy_part, rows, a, b, want_margin, want_entropy)
                   for a, b in zip(bounds[1:-1], bounds[2:])]
        first = _greedy_part(rows, 0, bounds[1], want_margin, want_entropy)  # this thread takes a share
        idx, conf, margin, entropy = (np.concatenate(col) for col in zip(first, *(f.result() for f in futures)))
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
    """Tokens and confidences for ``rows`` (a ``Rows`` or float32 ``[n, V]``; logits left untouched).

    Randomness drawn, in this order: a float64 uniform array ``[n, V]`` for Gumbel noise when
    temperature > 0. Nothing when temperature is 0.
    """
    if temperature == 0 and top_k == 0 and top_p >= 1:
        return greedy(rows, algorithm)
    rows = Rows.of(rows).array()
    z = rows.astype(np.float64)
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
