"""How many positions each forward pass commits."""

from __future__ import annotations

import numpy as np


def block_transfer_counts(masked: int, steps: int) -> list[int]:
    """LLaDA's linear schedule: an even split, the remainder one each to the first steps.

    The masked-diffusion forward process is linear in t, so the expected number of tokens
    revealed per step is constant (LLaDA paper, appendix B.6).
    """
    base, rem = divmod(masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def timesteps(steps: int, eps: float) -> np.ndarray:
    """Dream's noise levels, ``torch.linspace(1, eps, steps + 1)`` in float32, bit for bit; step i
    goes from t=ts[i] to s=ts[i+1].

    torch computes ``step = (eps - 1) / steps`` in float32, fills the first half as ``1 + step * i``
    and the second half as ``eps - step * (steps - i)``, each a fused multiply-add (one rounding), as
    its CPU build and nvcc compile it. Here the product and sum are exact in float64 (for eps >= 2^-29
    and steps < 2^29), then rounded once to float32.
    """
    n = steps + 1
    start, end = np.float32(1.0), np.float32(eps)
    step = np.float32((end - start) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    forward = (np.float64(start) + np.float64(step) * i).astype(np.float32)
    backward = (np.float64(end) - np.float64(step) * (n - 1 - i)).astype(np.float32)
    return np.where(np.arange(n) < n // 2, forward, backward)


def timestep_transfer_count(masked: int, step: int, steps: int, ts: np.ndarray) -> int:
    """Dream: reveal the fraction 1 - s/t of what is still masked; everything at the last step.

    ``int(num_mask * (1 - s / t))`` in float32, as Dream's tensors compute it (one rounding per op).
    """
    if step == steps - 1:
        return masked
    t, s = np.float32(ts[step]), np.float32(ts[step + 1])
    return int(np.float32(masked) * (np.float32(1.0) - s / t))


def threshold_count(sorted_conf: np.ndarray, threshold: float | None, factor: float | None) -> int:
    """Fast-dLLM parallel decoding: how many of the (descending) confidences to commit.

    Threshold rule: every confidence >= threshold. Factor rule: the n-th best (1-based) is taken
    while conf >= 1 - factor / (n + 1). Always at least the best one, so every pass makes progress.
    """
    if sorted_conf.size == 0:
        return 0
    if threshold is not None:
        n = int(np.count_nonzero(sorted_conf >= threshold))
    else:
        assert factor is not None, "threshold_count needs a threshold or a factor"
        ranks = np.arange(1, sorted_conf.size + 1)
        ok = sorted_conf >= 1.0 - factor / (ranks + 1)
        n = int(np.argmin(ok)) if not ok.all() else int(ok.size)
    return max(1, n)
