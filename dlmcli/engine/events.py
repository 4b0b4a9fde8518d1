"""The one event stream: the engine yields a ``Step`` per forward pass; every consumer reads it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    """What one forward pass did to one sequence's canvas."""

    index: int  # 0-based forward-pass number
    planned_steps: int  # forward passes planned; early stop may end sooner (Result.steps: passes run)
    block: int  # 0-based active block (always 0 in the timestep schedule)
    n_blocks: int  # blocks in the schedule (1 in the timestep schedule)
    block_start: int  # canvas index where the active block starts
    block_end: int  # canvas index one past the active block
    gen_start: int  # canvas index where the generated region starts (= prompt length)
    canvas: np.ndarray  # int32 tokens after this step's commits, prompt included (read-only)
    positions: np.ndarray  # canvas indices committed at this step
    tokens: np.ndarray  # the tokens committed there
    confidences: np.ndarray  # their confidence scores (float64; scale depends on the algorithm)
    masks_left: int  # masked positions still to fill after this step
    forward_s: float  # wall time of this step's forward pass (shared by a batch)
    sampling_s: float  # wall time of this sequence's host-side work in this step
    seq: int = 0  # the sequence's id in its scheduler (its index in a batch)
    batch: int = 1  # sequences that shared this forward pass

    @property
    def done(self) -> bool:
        return self.masks_left == 0

    @property
    def steps(self) -> int:
        """The old name of ``planned_steps`` (docs showed ``step.steps``); kept so that code still runs."""
        return self.planned_steps
