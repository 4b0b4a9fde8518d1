"""Live view of the canvas on stderr (minimal: the final frame; see issue 4 for the full view)."""

from __future__ import annotations

import sys

from .base import RunInfo


class LiveView:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.info: RunInfo | None = None

    def start(self, info: RunInfo) -> None:
        self.info = info

    def step(self, step) -> None:
        pass

    def finish(self, result) -> None:
        t = result.timings
        self.stream.write(f"{result.steps} steps, {t.total_s:.2f}s\n")

    def close(self) -> None:
        pass
