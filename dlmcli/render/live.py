"""The live view: the canvas redrawn on stderr as the masks resolve (Rich Live).

Redraws come from Rich's refresh thread at most ``fps`` times a second, whatever the step rate,
so fast runs do not flicker and slow ones still tick their clock. Each redraw renders the latest
immutable Frame; the main thread only swaps in a new one. stdout is never touched: the answer is
printed there after the view has stopped. Anything written to ``sys.stderr`` while the view is
live (llama.cpp's log under --verbose goes through Python, see runtime/native.py) is printed
above the view by Rich instead of tearing it.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live

from .base import RunInfo
from .view import Frame, ViewState

FPS = 12.0  # redraw cap


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False)


class LiveView:
    """A Sink that draws each step; ``close()`` always stops the display and restores the cursor."""

    def __init__(self, console: Console | None = None, delay: float = 0.0, *, fps: float = FPS,
                 auto_refresh: bool = True, recorded_time: bool = False, transient: bool = False):
        self.console = console or stderr_console()
        self.delay = delay
        self.fps = fps
        self.auto_refresh = auto_refresh
        self.recorded_time = recorded_time  # replay: the clock shows the recorded run's compute time
        self.transient = transient  # erase the view when it stops (dlm chat prints the answer as text instead)
        self.state: ViewState | None = None
        self._frame: Frame | None = None
        self._live: Live | None = None
        self._t0 = 0.0
        self._last_draw = 0.0
        self._finished = False

    def _elapsed(self) -> float:
        if self.recorded_time:
            return self.state.compute_s if self.state else 0.0
        return time.perf_counter() - self._t0

    def _render(self):
        f = self._frame
        if f is not None and not f.final and not self.recorded_time:
            f = f.at(elapsed=self._elapsed())  # the clock ticks during a long forward pass
        return f or ""

    def start(self, info: RunInfo) -> None:
        self.state = ViewState(info)
        self._t0 = time.perf_counter()
        self._frame = self.state.frame(0.0)
        self._live = Live(
            console=self.console, get_renderable=self._render, auto_refresh=self.auto_refresh,
            refresh_per_second=self.fps, transient=self.transient, redirect_stdout=False, redirect_stderr=True,
            vertical_overflow="crop",
        )
        self._live.start(refresh=True)

    def step(self, step) -> None:
        assert self.state is not None, "start() comes first"
        self.state.apply(step)
        self._frame = self.state.frame(self._elapsed())
        if not self.auto_refresh and self._live is not None:
            now = time.perf_counter()
            if now - self._last_draw >= 1.0 / self.fps:
                self._last_draw = now
                self._live.refresh()
        if self.delay:
            time.sleep(self.delay)

    def finish(self, result, note: str = "") -> None:
        """The run ended: the last frame shows the whole canvas, without highlights."""
        if self.state is None:
            return
        reason = getattr(result, "finish_reason", None)
        text = note or (f"finish: {reason}" if reason else "")
        # Uncropped, the last frame shows the whole canvas; a transient view keeps it within the screen,
        # where Rich can erase it.
        self._frame = self.state.frame(self._elapsed(), final=True, note=text).at(crop=self.transient)
        self._finished = True

    def close(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        if self.transient:
            pass  # erased on stop
        elif not self._finished and self._frame is not None:
            # Interrupted or failed: leave the last state on screen, whole, and say so.
            self._frame = self._frame.at(elapsed=self._elapsed(), crop=False, note="stopped")
        elif self._frame is not None:
            self._frame = self._frame.at(crop=False)
        try:
            live.stop()  # final redraw, then the cursor is shown again (in a finally inside Rich)
            if not self.console.is_terminal:
                self.console.line()  # off a terminal Rich leaves the last frame without its newline
        finally:
            try:
                self.console.show_cursor(True)
            except Exception:  # the terminal may be gone (hangup); nothing left to restore
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

