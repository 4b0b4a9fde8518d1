"""A run's schedule: which positions are in which block, and how many each forward pass commits.

``Schedule`` is the one answer to both: the engine plans each sequence with it and the views (the live
view, replay, the pictures) draw with it, so what they show cannot differ from what ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from ..errors import UsageError, param


@dataclass(frozen=True)
class Schedule:
    """The plan of one generated region of REGION positions (the canvas after the prompt).

    Block schedule: blocks of ``block_length`` from the region's start, the last one shorter when the
    length does not divide the region (an infill's 9 positions in blocks of 4: 4, 4, 1), and
    ``steps_per_block`` passes each. Timestep schedule: one block over the whole region.
    """

    kind: str  # "block" or "timestep"
    region: int
    block_length: int  # positions per block (the last block may be shorter)
    n_blocks: int
    steps_per_block: int
    eps: float = 1e-3  # timestep schedule: the final noise level

    @classmethod
    def plan(cls, kind: str, region: int, steps: int, block_length: int | None = None,
             eps: float = 1e-3) -> Schedule:
        """The split as the engine runs it; steps that do not split evenly over the blocks get
        ``steps // n_blocks`` each here (``check`` says so)."""
        region = max(int(region), 0)
        steps = max(int(steps), 1)
        if kind == "block":
            length = max(1, min(int(block_length or region), region)) if region else 1
            n_blocks = max(1, -(-region // length))
            return cls(kind, region, length, n_blocks, max(1, steps // n_blocks), eps)
        return cls(kind, region, region, 1, steps, eps)

    @classmethod
    def of(cls, params, region: int) -> Schedule:
        """The schedule of GenerationParams PARAMS over REGION positions; UsageError when the steps do not
        split evenly over the blocks."""
        plan = cls.plan(params.schedule, region, params.steps, params.block_length, params.eps)
        plan.check(params.steps)
        return plan

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], region: int) -> Schedule:
        """The schedule a run recorded (``GenerationParams.to_dict()``, as traces keep it); never raises."""
        try:
            return cls.plan(str(params.get("schedule", "block")), region, int(params.get("steps") or 1),
                            int(params.get("block_length") or region or 1), float(params.get("eps", 1e-3)))
        except (TypeError, ValueError):
            return cls.plan("block", region, 1, region)

    def check(self, steps: int) -> None:
        if self.kind == "block" and steps % self.n_blocks:
            raise UsageError(f"{param('steps')} {steps} does not split evenly over {self.n_blocks} blocks",
                             param="steps")

    def bounds(self, block: int) -> tuple[int, int]:
        """Positions [lo, hi) of BLOCK, counted from the region's start."""
        lo = min(block * self.block_length, self.region)
        return lo, min(lo + self.block_length, self.region)

    def sizes(self) -> tuple[int, ...]:
        """Positions in each block."""
        return tuple(hi - lo for lo, hi in map(self.bounds, range(self.n_blocks)))

    def block_commits(self, masked: int) -> list[int]:
        """Block schedule: commits at each pass of a block that starts with MASKED masks."""
        return block_transfer_counts(masked, self.steps_per_block)

    @cached_property
    def timesteps(self) -> np.ndarray:
        """Timestep schedule: the noise levels (``timesteps``), made when first asked for."""
        return timesteps(self.steps_per_block, self.eps)

    def timestep_commits(self, masked: int, step: int) -> int:
        """Timestep schedule: commits at pass STEP with MASKED masks left."""
        return timestep_transfer_count(masked, step, self.steps_per_block, self.timesteps)


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
