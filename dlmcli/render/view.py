"""One frame of the denoising view, as a Rich renderable, built from a RunInfo and its Steps.

``ViewState`` follows the Step stream and hands out immutable ``Frame`` snapshots; a Frame lays
itself out for whatever width and height the console has when it is drawn (so a resize between
two frames is simply the next frame at the new size). The live view and ``dlm replay`` both
draw these frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.style import Style
from rich.text import Text

from ..engine.events import Step
from ..engine.schedule import Schedule
from .base import RunInfo
from .text import EOG_GLYPH, MASK_GLYPH, confidence_rgb, token_glyph, unit_confidence, visible

MASK_ACTIVE = Style(color="grey70")  # masks in the block being denoised now
MASK_LATER = Style(color="grey35")  # masks in blocks still to come
FILLED = Style(color="grey50", dim=True)  # filled by early stop: never chosen, no confidence
LEVELS = 16  # confidence colours are quantised to this many shades


@lru_cache(maxsize=None)
def conf_style(level: int, new: bool, quiet: bool = False) -> Style:
    """Colour of a committed token; QUIET (end-of-generation padding) is dimmed once it is old."""
    rgb = confidence_rgb(level / (LEVELS - 1))
    if new:  # committed at this very step: the confidence colour as a background
        return Style(color="black", bgcolor=Color.from_rgb(*rgb), bold=True)
    return Style(color=Color.from_rgb(*rgb), dim=quiet)


def _level(u: float) -> int:
    return int(round(u * (LEVELS - 1)))


def short_model_name(model: str) -> str:
    return Path(model).name if model.endswith(".gguf") else model


@dataclass(frozen=True)
class Frame:
    """Everything needed to draw one moment of a run; cheap to render, safe to share with a thread."""

    model: str
    prompt: str  # already made visible
    canvas: Text  # the generated region, styled, one glyph run per position
    anchor: int  # offset in canvas.plain where the active block starts (kept in view when cropped)
    block_done: tuple[int, ...]  # committed positions per block
    block_size: tuple[int, ...]  # positions per block
    block: int  # active block (0-based); -1 before the first step
    step: int  # steps done so far
    steps: int  # steps planned
    masks_left: int
    tokens_per_s: float | None
    elapsed: float
    final: bool = False
    note: str = ""  # replaces the status line's tail at the end ("done", "interrupted", ...)
    crop: bool = True  # keep the frame within the terminal height (off for the last frame)

    def at(self, **changes) -> "Frame":
        return replace(self, **changes)

    # --- layout ---------------------------------------------------------------------------------
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, 10)
        height = options.height or options.size.height or console.height
        title = self._title()
        schedule = self._schedule(width)
        status = self._status()
        legend = self._legend(console.no_color or console.color_system is None)
        fixed_lines = [title, schedule, status, legend]
        for t in fixed_lines:
            t.no_wrap, t.overflow = True, "ellipsis"

        canvas = self.canvas.copy()
        canvas.overflow = "fold"
        lines = list(canvas.wrap(console, width, overflow="fold"))
        if not lines:
            lines = [Text("")]
        room = max(1, height - len(fixed_lines) - 3)  # 3: two blank lines and one spare
        if self.crop and len(lines) > room:
            lines = self._window(lines, room)

        yield title
        yield Text("")
        for line in lines:
            line.no_wrap = True
            yield line
        yield Text("")
        yield schedule
        yield status
        yield legend

    def _window(self, lines: list[Text], room: int) -> list[Text]:
        """ROOM lines that keep the active block's start in view, with a marker for what is hidden."""
        offset, at = 0, 0
        for i, line in enumerate(lines):
            if offset + len(line.plain) > self.anchor:
                at = i
                break
            offset += len(line.plain)
        else:
            at = len(lines) - 1
        start = max(0, min(at - 1, len(lines) - room))
        shown = lines[start:start + room]
        if start > 0:
            shown[0] = Text(f"⋮ {start} more line{'s' if start > 1 else ''} above", style="dim")
        hidden = len(lines) - (start + len(shown))
        if hidden > 0:
            shown[-1] = Text(f"⋮ {hidden} more line{'s' if hidden > 1 else ''} below", style="dim")
        return shown

    def _title(self) -> Text:
        t = Text()
        t.append("dlm", style="bold")
        t.append(f" · {visible(short_model_name(self.model))}", style="cyan")
        if self.prompt:
            t.append(" · ", style="dim")
            t.append(self.prompt, style="italic")
        return t

    def _schedule(self, width: int) -> Text:
        """One segment per block, filled as its positions are committed; the active one bold."""
        t = Text()
        t.append("blocks ", style="dim")
        n = len(self.block_size)
        room = width - len(t.plain)
        seg = min(12, room // n - 1) if n else 0
        if seg >= 2:
            for b, (done, size) in enumerate(zip(self.block_done, self.block_size)):
                full = seg if done >= size else int(seg * done / size) if size else seg
                style = "bold yellow" if b == self.block and not self.final else "green" if done >= size else "grey50"
                t.append("▕", style="grey35")
                t.append("█" * full, style=style)
                t.append("░" * (seg - full), style="bold grey50" if b == self.block and not self.final else "grey35")
            t.append("▏", style="grey35")
        else:  # too many blocks for the width: one cell per block
            for b, (done, size) in enumerate(zip(self.block_done, self.block_size)):
                glyph = "█" if done >= size else "▒" if done else "░"
                t.append(glyph, style="bold yellow" if b == self.block and not self.final else
                         "green" if done >= size else "grey35")
        return t

    def _status(self) -> Text:
        t = Text()
        if self.step == 0 and not self.final:
            t.append(f"starting · {self.masks_left} masks", style="bold")
        else:
            if self.final:
                head, style = ("done", "bold green") if self.masks_left == 0 else ("ended", "bold yellow")
            else:
                head, style = f"step {self.step}/{self.steps}", "bold"
            t.append(head, style=style)
            if self.note:  # right after the head, so a narrow terminal still shows it
                t.append(" · ", style="dim")
                t.append(self.note, style="yellow")
            n_blocks = len(self.block_size)
            parts = [] if self.final else [f"block {self.block + 1}/{n_blocks}"]
            if self.final:
                parts.append(f"{self.step} step{'s' if self.step != 1 else ''}")
            if self.masks_left or not self.final:
                parts.append(f"{self.masks_left} mask{'s' if self.masks_left != 1 else ''} left")
            if self.tokens_per_s is not None:
                parts.append(f"{self.tokens_per_s:.0f} tok/s")
            parts.append(f"{self.elapsed:.1f}s")
            for p in parts:
                t.append(" · ", style="dim")
                t.append(p)
        if self.note and self.step == 0 and not self.final:
            t.append(" · ", style="dim")
            t.append(self.note, style="yellow")
        return t

    def _legend(self, no_color: bool = False) -> Text:
        t = Text()
        if no_color:  # NO_COLOR or a dumb terminal: a colour ramp would be blocks of one shade
            t.append("new: bold", style="bold")
            t.append(f"  {MASK_GLYPH} masked  {EOG_GLYPH} end  ↵ newline  (no colours: no confidence shown)")
            return t
        t.append("confidence low ", style="dim")
        for k in range(0, LEVELS, 3):  # the ramp itself is not dimmed: it is the key to the colours
            t.append("█", style=conf_style(k, False))
        t.append(" high  ", style="dim")
        t.append(" new ", style=conf_style(LEVELS - 1, True))
        t.append(f"  {MASK_GLYPH} masked  {EOG_GLYPH} end  ↵ newline", style="dim")
        return t


class ViewState:
    """Follows a run's Steps and makes Frames of it."""

    def __init__(self, info: RunInfo):
        self.info = info
        self.gen_start = info.gen_start
        self.tokens = np.array(info.canvas[info.gen_start:], dtype=np.int64)
        region = len(self.tokens)
        self.conf = np.full(region, np.nan)  # 0..1, NaN: not chosen (masked or filled)
        self.commit_step = np.full(region, -1, dtype=np.int64)
        self.new = np.zeros(region, dtype=bool)
        self.fixed = np.zeros(region, dtype=bool)
        for pos in info.fixed:
            if info.gen_start <= pos < info.gen_start + region:
                self.fixed[pos - info.gen_start] = True
        self.algorithm = str(info.params.get("algorithm", "low-confidence"))
        self.mask_id = info.mask_id
        self.eog = info.eog_ids
        self.plan = Schedule.from_dict(info.params, region)  # the blocks as the engine splits them
        self.block = -1
        self.block_start = info.gen_start
        self.step_count = 0
        self.steps = int(info.params.get("steps", 0) or 0)
        self.masks_left = int(np.count_nonzero(self.tokens == self.mask_id))
        self.chosen = 0  # positions committed by choice (not by early stop)
        self.compute_s = 0.0
        self.prompt = visible(info.prompt)
        self._glyphs: dict[int, str] = {}

    def glyph(self, token: int) -> str:
        g = self._glyphs.get(token)
        if g is None:
            g = token_glyph(self.info.token_text(token), is_eog=token in self.eog)
            self._glyphs[token] = g
        return g

    def apply(self, step: Step) -> None:
        gs = self.gen_start
        self.new[:] = False
        pos = np.asarray(step.positions, dtype=np.int64) - gs
        keep = (pos >= 0) & (pos < len(self.tokens))
        pos = pos[keep]
        self.tokens[pos] = np.asarray(step.tokens)[keep]
        self.conf[pos] = unit_confidence(np.asarray(step.confidences)[keep], self.algorithm)
        self.commit_step[pos] = step.index
        self.new[pos] = True
        self.block = step.block
        self.block_start = step.block_start
        self.step_count = step.index + 1
        self.steps = step.planned_steps
        self.masks_left = step.masks_left
        self.chosen += int(np.count_nonzero(~np.isnan(np.asarray(step.confidences, dtype=np.float64)[keep])))
        self.compute_s += step.forward_s + step.sampling_s

    def _canvas_text(self, final: bool) -> tuple[Text, int]:
        text = Text()
        region = len(self.tokens)
        a_lo, a_hi = self.plan.bounds(max(self.block, 0))
        anchor = 0
        for i in range(region):
            if i == a_lo:
                anchor = len(text)
            tok = int(self.tokens[i])
            if tok == self.mask_id:
                text.append(MASK_GLYPH, MASK_ACTIVE if a_lo <= i < a_hi and not final else MASK_LATER)
                continue
            glyph = self.glyph(tok)
            u = self.conf[i]
            if self.fixed[i]:
                style = Style(bold=True, underline=True)
            elif math.isnan(u):
                style = FILLED if self.commit_step[i] >= 0 else Style()
            else:
                style = conf_style(_level(u), bool(self.new[i]) and not final, tok in self.eog)
            text.append(glyph, style)
        return text, anchor

    def blocks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Committed positions and positions, per block."""
        bounds = [self.plan.bounds(b) for b in range(self.plan.n_blocks)]
        done = tuple(int(np.count_nonzero(self.tokens[lo:hi] != self.mask_id)) for lo, hi in bounds)
        return done, self.plan.sizes()

    def frame(self, elapsed: float, *, final: bool = False, note: str = "") -> Frame:
        canvas, anchor = self._canvas_text(final)
        done, sizes = self.blocks()
        tps = self.chosen / self.compute_s if self.compute_s > 0 and self.chosen else None
        return Frame(
            model=self.info.model, prompt=self.prompt, canvas=canvas, anchor=anchor, block_done=done,
            block_size=sizes, block=self.block, step=self.step_count, steps=self.steps,
            masks_left=self.masks_left, tokens_per_s=tps, elapsed=elapsed, final=final, note=note,
        )
