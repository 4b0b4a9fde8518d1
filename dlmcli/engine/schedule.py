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
    """Dream's noise levels: ``linspace(1, eps, steps + 1)``; step i goes from t=ts[i] to s=ts[i+1]."""
    return np.linspace(1.0, eps, steps + 1)


def timestep_transfer_count(masked: int, step: int, steps: int, ts: np.ndarray) -> int:
    """Dream: reveal the fraction 1 - s/t of what is still masked; everything at the last step."""
    if step == steps - 1:
        return masked
    t, s = ts[step], ts[step + 1]
    return int(masked * (1 - s / t))


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
        ranks = np.arange(1, sorted_conf.size + 1)
        ok = sorted_conf >= 1.0 - factor / (ranks + 1)
        n = int(np.argmin(ok)) if not ok.all() else int(ok.size)
    return max(1, n)
