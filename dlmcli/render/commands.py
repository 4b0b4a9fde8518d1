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
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
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
        file: Annotated[Path, typer.Argument(metavar="TRACE", help="A trace written by 'dlm generate --trace FILE' ('-': stdin).", show_default=False)],
        speed: Annotated[float, typer.Option("--speed", metavar="N", help="Steps per second (0: as fast as the screen redraws).")] = DEFAULT_SPEED,
        svg: Annotated[Optional[Path], typer.Option("--svg", metavar="FILE", help="Write a picture of the whole run to this SVG file ('-': stdout).")] = None,
        html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="Write a page with a step slider to this HTML file ('-': stdout).")] = None,
        visual: Annotated[Optional[bool], typer.Option("--visual/--no-visual", help="Replay in the terminal (default: when stderr is a terminal and no picture is asked for).")] = None,
    ):
        """Replay a trace: the denoising on stderr, the answer on stdout; or draw it with --svg/--html."""
        if not (speed == 0 or 1 / MAX_DELAY <= speed < float("inf")):
            raise UsageError(f"--speed must be 0 (no pauses) or a finite number of at least {1 / MAX_DELAY:.2g} "
                             f"steps per second (one an hour) (got {speed})")
        from .trace import read_trace

        to_stdout = [p for p in (svg, html) if p is not None and str(p) == "-"]
        if len(to_stdout) > 1:
            raise UsageError("--svg - and --html - would both write stdout; send one of them to a file")
        trace = read_trace(file)
        pictures = [(p, kind) for p, kind in ((svg, "svg"), (html, "html")) if p is not None]
        if pictures:
            from .picture import to_html, to_svg

            for path, kind in pictures:
                _write(path, to_svg(trace) if kind == "svg" else to_html(trace))
                if str(path) != "-":
                    _err(f"Wrote {path}")
        if visual is None:
            visual = sys.stderr.isatty() and not pictures
        if visual:
            replay_trace(trace, speed=speed)
        if not trace.complete:
            # A cut-short run has no answer: what it committed so far is not printed as one.
            why = "its last line is cut off" if trace.torn else "it has no end record"
            n = len(trace.steps)
            done = "drew" if pictures and not visual else "replayed"
            raise DlmError(f"{file} is incomplete ({why}): the run was interrupted or is still being written; "
                           f"{done} the {n} step{'s' if n != 1 else ''} it has, and there is no answer")
        if pictures and not visual:
            return
        sys.stdout.write(trace.answer() + "\n")
        sys.stdout.flush()
