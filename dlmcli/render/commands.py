"""``dlm replay``: a trace back on the terminal, or drawn to an SVG or HTML file. No model needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import DlmError, UsageError
from . import MAX_DELAY

DEFAULT_SPEED = 8.0  # steps per second


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise DlmError(f"cannot write {path}: {e.strerror or e}") from None


class _Ending:
    """What LiveView.finish reads from a Result, taken from a trace's end record."""

    def __init__(self, end: dict | None):
        self.finish_reason = (end or {}).get("finish_reason")


def replay_trace(trace, *, speed: float, console=None) -> None:
    """Draw TRACE's steps with the live view, SPEED steps a second (0: no pauses)."""
    from .live import LiveView

    view = LiveView(console, delay=1.0 / speed if speed > 0 else 0.0, recorded_time=True)
    try:
        view.start(trace.info)
        for step in trace.steps:
            view.step(step)
        note = "" if trace.complete else "trace cut short"
        view.finish(_Ending(trace.end), note=note)
    finally:
        view.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def replay(
        file: Annotated[Path, typer.Argument(help="A trace written by 'dlm generate --trace FILE'.", show_default=False)],
        speed: Annotated[float, typer.Option("--speed", help="Steps per second (0: as fast as the screen redraws).")] = DEFAULT_SPEED,
        svg: Annotated[Optional[Path], typer.Option("--svg", help="Write a picture of the whole run to this SVG file.")] = None,
        html: Annotated[Optional[Path], typer.Option("--html", help="Write a page with a step slider to this HTML file.")] = None,
        visual: Annotated[Optional[bool], typer.Option("--visual/--no-visual", help="Replay in the terminal (default: when stderr is a terminal and no picture is asked for).")] = None,
    ):
        """Replay a trace: the denoising on stderr, the answer on stdout; or draw it with --svg/--html."""
        if not (speed == 0 or 1 / MAX_DELAY <= speed < float("inf")):
            raise UsageError(f"--speed must be 0 (no pauses) or a finite number of at least {1 / MAX_DELAY:.2g} "
                             f"steps per second (one an hour) (got {speed})")
        from .trace import read_trace

        trace = read_trace(file)
        if not trace.complete:
            why = "its last line is cut off" if trace.torn else "it has no end record"
            _err(f"Warning: {file} is incomplete ({why}): the run was interrupted or is still being written; "
                 f"using the {len(trace.steps)} step{'s' if len(trace.steps) != 1 else ''} it has.")
        pictures = [(p, kind) for p, kind in ((svg, "svg"), (html, "html")) if p is not None]
        if pictures:
            from .picture import to_html, to_svg

            for path, kind in pictures:
                _write(path, to_svg(trace) if kind == "svg" else to_html(trace))
                _err(f"Wrote {path}")
            if not visual:
                return
        if visual is None:
            visual = sys.stderr.isatty()
        if visual:
            replay_trace(trace, speed=speed)
        sys.stdout.write(trace.answer() + "\n")
        sys.stdout.flush()
