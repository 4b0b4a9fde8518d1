"""Live view of the canvas on stderr (placeholder until issue 4 lands: prints a final stats line)."""

from __future__ import annotations

import sys
import time

from .base import RunInfo


class LiveView:
    def __init__(self, stream=None, delay: float = 0.0):
        self.stream = stream or sys.stderr
        self.delay = delay
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        self.info = info

    def step(self, step) -> None:
        if self.delay:
            time.sleep(self.delay)

    def finish(self, result) -> None:
        t = result.timings
        self.stream.write(f"{result.steps} steps, {t.total_s:.2f}s\n")

    def close(self) -> None:
        pass


class Pause:
    """--delay without a view: still pace the run (useful with --trace or in a recording)."""

    def __init__(self, delay: float):
        self.delay = delay

    def start(self, info) -> None:
        pass

    def step(self, step) -> None:
        time.sleep(self.delay)

    def finish(self, result) -> None:
        pass

    def close(self) -> None:
        pass
