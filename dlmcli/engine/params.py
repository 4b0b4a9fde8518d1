"""Every knob of the denoising loop, resolved and validated (no Nones left but ``seed``)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from ..errors import UsageError, param

SCHEDULES = ("block", "timestep")
ALGORITHMS = ("low-confidence", "random", "origin", "margin", "entropy")
# The model authors' names (LLaDA's remasking, Dream's alg) and spellings with '_' for ours.
ALGORITHM_ALIASES = {"low_confidence": "low-confidence", "maskgit_plus": "low-confidence",
                     "maskgit-plus": "low-confidence", "topk_margin": "margin", "topk-margin": "margin"}
MAX_LENGTH = 1 << 20  # tokens or steps: far past any model's context, small enough to plan in memory
MIN_TEMPERATURE = 1e-6  # below this, logits / T overflows float64 for large logits; use 0 (argmax)
MAX_CFG = 1e6  # guidance past this overflows float32 logits


@dataclass(frozen=True)
class GenerationParams:
    gen_length: int = 128  # tokens in the generated region
    steps: int = 128  # forward passes planned (threshold decoding and early stop may run fewer)
    block_length: int = 32  # block schedule: tokens per semi-autoregressive block
    schedule: str = "block"  # "block" (LLaDA) or "timestep" (Dream)
    algorithm: str = "low-confidence"  # how positions compete to be committed
    alg_temp: float = 0.0  # > 0: sample positions from softmax(confidence / alg_temp) (Dream)
    temperature: float = 0.0  # 0 = argmax tokens; > 0 = draw from softmax(filtered logits / T)
    top_k: int = 0  # keep the k most likely tokens before sampling; 0 = off
    top_p: float = 1.0  # nucleus filter before sampling; 1 = off
    cfg: float = 0.0  # classifier-free guidance scale; 0 = off (LLaDA)
    eps: float = 1e-3  # timestep schedule: final noise level (Dream)
    seed: int | None = None  # None = fresh entropy each run
    threshold: float | None = None  # commit every position at least this confident (Fast-dLLM)
    factor: float | None = None  # Fast-dLLM factor rule: n-th best committed if conf >= 1 - factor/(n+1)
    early_stop: bool = False  # stop spending passes once the answer has resolved to end-of-generation

    def __post_init__(self) -> None:
        for name, aliases in (("algorithm", ALGORITHM_ALIASES), ("schedule", {})):
            value = getattr(self, name)
            if isinstance(value, str):
                key = value.strip().lower()
                object.__setattr__(self, name, aliases.get(key, key))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pass_copies(self) -> int:
        """Rows of a forward pass one canvas takes: two with classifier-free guidance (the Scheduler
        adds the unconditional copy), else one."""
        return 2 if self.cfg > 0 else 1

    def validate(self) -> "GenerationParams":
        """Raise UsageError naming the parameter at fault (the CLI spells it as its flag); return self."""
        for name in ("gen_length", "steps", "block_length", "top_k", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise UsageError(f"{param(name)} must be a whole number (got {value!r})")
        for name in ("temperature", "alg_temp", "top_p", "cfg", "eps", "threshold", "factor"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise UsageError(f"{param(name)} must be a number (got {value!r})")
        if not 1 <= self.gen_length <= MAX_LENGTH:
            raise UsageError(f"{param('gen_length')} must be between 1 and {MAX_LENGTH} (got {self.gen_length})")
        if not 1 <= self.steps <= MAX_LENGTH:
            raise UsageError(f"{param('steps')} must be between 1 and {MAX_LENGTH} (got {self.steps})")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"{param('schedule')} must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.algorithm not in ALGORITHMS:
            raise UsageError(f"{param('algorithm')} must be one of {', '.join(ALGORITHMS)}, or the authors' names "
                             f"{', '.join(a for a in ALGORITHM_ALIASES if '_' in a)} (got {self.algorithm!r})")
        for name, value in (("temperature", self.temperature), ("alg_temp", self.alg_temp)):
            if not (value == 0 or MIN_TEMPERATURE <= value < math.inf):
                raise UsageError(f"{param(name)} must be 0 or a finite number of at least {MIN_TEMPERATURE:g} "
                                 f"(got {value})", param=name)
        if self.top_k < 0:
            raise UsageError(f"{param('top_k')} must be 0 (off) or more (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"{param('top_p')} must be in (0, 1] (got {self.top_p})")
        if not 0 <= self.cfg <= MAX_CFG:
            raise UsageError(f"{param('cfg')} must be between 0 and {MAX_CFG:g} (got {self.cfg})")
        if not 0 < self.eps < 1:
            raise UsageError(f"{param('eps')} must be in (0, 1) (got {self.eps})")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UsageError(f"{param('seed')} must be between 0 and 2^63-1 (got {self.seed})")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise UsageError(f"{param('threshold')} must be in (0, 1] (got {self.threshold})")
        if self.factor is not None and not 0 < self.factor < math.inf:
            raise UsageError(f"{param('factor')} must be a finite number more than 0 (got {self.factor})")
        if self.threshold is not None and self.factor is not None:
            raise UsageError(f"{param('threshold')} and {param('factor')} are two rules for the same choice; "
                             f"pass one", param="factor")
        if (self.threshold is not None or self.factor is not None) and self.algorithm in ("entropy", "origin"):
            # entropy scores are <= 0 and origin has no scores: a threshold would silently do nothing.
            name = "threshold" if self.threshold is not None else "factor"
            raise UsageError(f"{param(name)} compares confidences in [0, 1]; {param('algorithm')} {self.algorithm} "
                             f"has none. Use {param('algorithm')} low-confidence or margin with it")
        if self.schedule == "block":
            if self.block_length <= 0:
                raise UsageError(f"{param('block_length')} must be at least 1 (got {self.block_length})")
            if self.gen_length % self.block_length:
                raise UsageError(
                    f"{param('gen_length')} {self.gen_length} is not a multiple of {param('block_length')} "
                    f"{self.block_length}; "
                    f"pick a block length that divides it (e.g. {_divisor_near(self.gen_length, self.block_length)})",
                    param="block_length",
                )
            n_blocks = self.gen_length // self.block_length
            if self.steps % n_blocks:
                lo = max(n_blocks, self.steps - self.steps % n_blocks)
                raise UsageError(
                    f"{param('steps')} {self.steps} does not split evenly over {n_blocks} blocks; "
                    f"use a multiple of {n_blocks} (e.g. {lo} or {lo + n_blocks})"
                )
        return self

    @property
    def n_blocks(self) -> int:
        return self.gen_length // self.block_length if self.schedule == "block" else 1


def _divisor_near(n: int, target: int) -> int:
    # Divisors come in pairs (d, n // d) with d <= sqrt(n): O(sqrt n), not O(n).
    divisors: set[int] = set()
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            divisors.update((d, n // d))
    return min(divisors, key=lambda d: (abs(d - target), -d))
