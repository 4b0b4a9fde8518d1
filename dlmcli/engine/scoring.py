"""Token choice and confidence for the rows (canvas positions) that compete at one step.

Float32 logits rows ``[n, vocab]`` in, one token and one score per row out. Two conventions, both
from the authors' code:
- ``raw`` (LLaDA ``generate.py``): the token is drawn from the tempered, filtered logits, but its
  confidence (and margin or entropy) is measured on the *untempered, unfiltered* full softmax.
- ``sampled`` (Dream ``sample_tokens``): temperature, top-p and top-k shape one distribution; the
  token is drawn from it and its confidence, margin or entropy is measured on it.
At temperature 0 with no top-k/top-p both reduce to argmax and the full-vocabulary softmax.

Filters follow Dream's order: top-p, then top-k; the token whose cumulative probability crosses p is
kept, ties ranked by vocabulary index. With temperature > 0 the token is drawn by inverse CDF (in
vocabulary order) with one float64 uniform per row from the sequence's generator: the authors'
distribution, softmax(filtered logits / T), not their random streams (Gumbel noise over the whole
vocabulary in LLaDA, torch's multinomial in Dream), which no other RNG reproduces anyway.

The rows are reduced in ``_rowscore`` (a small C extension built at install time: one read of each
row from main memory, vectorised exp/log, top-p/top-k found from the row's few best tokens or a
histogram instead of a sort, rows split over OpenMP threads) when it is built, else in numpy with the same definitions (float64
filtering; the tests' oracle); ``DLM_SCORING=numpy`` forces the numpy path. The number of threads is
an argument of every call (a model's runtime decides it), so two models in one process can differ.
"""

from __future__ import annotations

import os
import threading

import numpy as np

try:
    from dlmcli.engine import _rowscore
except ImportError:  # not built (no compiler at install time): the numpy path below does the same
    _rowscore = None  # type: ignore[assignment]  # optional module: every call is behind _kernel_reads()

# Dream adds this inside the log of its entropy confidence; kept so scores match its code.
ENTROPY_EPS = 1e-10

# Rows are reduced a few at a time in a buffer of about this size, so that after the one read from
# the logits (main memory) the argmax/subtract/exp/sum passes hit the CPU cache.
CHUNK_BYTES = 1 << 21

# Logits per scoring thread, at least (1M: about 0.6 ms of the C kernel on one core).
MIN_PER_THREAD = 1 << 20

MODES = {"margin": 1, "entropy": 2}  # the kernel's score modes; anything else: 0 (confidence)

# The kernel's scratch (MBs per thread for Dream's vocabulary), one per Python thread and kept: a
# fresh allocation each step was page-faulted and zeroed by the OS on every call.
_scratch = threading.local()


def _work() -> bytearray:
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = bytearray()
    return buf


def default_threads() -> int:
    """Scoring threads when --threads is not given: the CPUs this process may use. Work is split
    only as far as MIN_PER_THREAD allows, so few rows still run on few threads."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def _parts(n: int, vocab: int, threads: int, per: int = MIN_PER_THREAD) -> int:
    # A thread only pays for itself with enough logits to reduce (a handoff costs tens of µs).
    return max(1, min(int(threads), n, n * vocab // per))


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
                    float(rows.scale), mode, idx, val, threads, _work())
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


def greedy(rows, algorithm: str, threads: int = 1):
    """Fast path (temperature 0, no filters): tokens and confidences, reading each logit once.

    ``rows``: a ``Rows`` or a float32 array ``[n, V]``; ``threads``: the kernel's OpenMP threads.
    """
    rows = Rows.of(rows)
    want_margin = algorithm == "margin"
    want_entropy = algorithm == "entropy"
    parts = _parts(len(rows), rows.shape[1], threads)
    idx, conf, margin, entropy = _greedy_part(rows, 0, len(rows), want_margin, want_entropy, parts)
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


def _inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, the first index whose cumulative probability exceeds u * total (vocabulary order)."""
    c = np.cumsum(p, axis=1)
    target = u * c[:, -1]
    idx = np.argmax(c > target[:, None], axis=1)
    short = c[:, -1] <= target  # rounding at u close to 1: the last token with any mass
    if short.any():
        idx[short] = p.shape[1] - 1 - np.argmax(p[short, ::-1] > 0, axis=1)
    return idx


def _sample_numpy(rows: "Rows", algorithm: str, temperature: float, top_k: int, top_p: float, convention: str,
                  u: np.ndarray | None):
    """The definition (and the fallback): float64 filtering of whole rows, inverse CDF with ``u``."""
    x = rows.array()
    z = x.astype(np.float64)
    if temperature > 0:
        z /= temperature
    filter_logits(z, top_k, top_p)
    if temperature > 0:
        assert u is not None  # drawn whenever temperature > 0 (sample())
        idx = _inverse_cdf(_softmax64(z), u)
    else:
        idx = np.argmax(z, axis=1)
    p = _softmax64(x.astype(np.float64)) if convention == "raw" else _softmax64(z)
    return idx, _score_from_probs(p, idx, algorithm)


def sample(rows, algorithm: str, temperature: float, top_k: int, top_p: float, convention: str,
           rng: np.random.Generator, threads: int = 1):
    """Tokens and confidences for ``rows`` (a ``Rows`` or float32 ``[n, V]``; logits left untouched).

    Randomness drawn: one float64 uniform per row (``rng.random(n)``) when temperature > 0, so the
    tokens depend on neither the threads nor the other sequences of a batch. Nothing at temperature 0.
    """
    rows = Rows.of(rows)
    n, vocab = rows.shape
    filtered = 0 < top_k < vocab or top_p < 1
    # At temperature 0 the argmax survives every filter, and 'raw' scores ignore the filters.
    if temperature == 0 and (not filtered or convention == "raw"):
        return greedy(rows, algorithm, threads)
    u = rng.random(n) if temperature > 0 else None
    if not _kernel_reads(rows):
        with np.errstate(invalid="ignore", over="ignore"):
            return _sample_numpy(rows, algorithm, temperature, top_k, top_p, convention, u)
    idx = np.empty(n, np.int64)
    val = np.empty(n)
    _rowscore.sample(rows.logits, np.ascontiguousarray(rows.index, dtype=np.int64), rows.uncond,
                     float(rows.scale), float(temperature), int(top_k), float(top_p), int(convention == "raw"),
                     MODES.get(algorithm, 0), u, idx, val, _parts(n, vocab, threads, MIN_PER_THREAD // 8), _work())
    return idx, val
