"""The live view on a captured console: frames, colours, wrapping, escapes, the cursor, the redraw cap."""

from __future__ import annotations

import io
import re
import sys
import time

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console

from dlmcli.render.live import LiveView
from dlmcli.render.text import EOG_GLYPH, MASK_GLYPH, confidence_rgb, unit_confidence, visible
from dlmcli.render.view import LEVELS, ViewState

from .fake_run import fake_run

HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"


def console(width=60, height=24, color=False, terminal=False) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, force_terminal=terminal or color,
                   color_system="truecolor" if color else None, legacy_windows=False, _environ={})


def draw(frame, width=60, height=24) -> str:
    c = console(width, height)
    c.print(frame)
    return c.file.getvalue()


def canvas_lines(out: str) -> list[str]:
    """The canvas: the lines between the title's blank line and the one before the block schedule."""
    lines = out.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("blocks "))
    return lines[2:end - 1]


def test_frames_follow_the_run():
    info, steps, result = fake_run(gen_length=32, steps=16, block_length=8)
    state = ViewState(info)
    first = draw(state.frame(0.0))
    assert first.splitlines()[0].startswith("dlm · fake.gguf · say hello")
    assert "".join(canvas_lines(first)).count(MASK_GLYPH) == 32
    seen = []
    for s in steps:
        state.apply(s)
        out = draw(state.frame(1.0))
        masks = "".join(canvas_lines(out)).count(MASK_GLYPH)
        assert masks == s.masks_left
        status = next(line for line in out.splitlines() if line.startswith("step "))
        assert f"step {s.index + 1}/16" in status and f"block {s.block + 1}/4" in status
        assert f"{s.masks_left} masks left" in status or f"{s.masks_left} mask left" in status
        assert "tok/s" in status and "1.0s" in status
        seen.append(masks)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0 and len(set(seen)) > 8
    last = draw(state.frame(2.0, final=True, note="finish: eos"))
    text = "".join(canvas_lines(last))
    assert text.startswith("hello world↵")
    assert text.endswith(EOG_GLYPH * 5)
    assert "done · finish: eos · 16 steps" in last


def test_block_schedule_shows_blocks_and_progress():
    info, steps, _ = fake_run(gen_length=32, steps=16, block_length=8)
    state = ViewState(info)
    for s in steps[:6]:  # 4 steps per block: block 2 is half done
        state.apply(s)
    line = next(x for x in draw(state.frame(0.0)).splitlines() if x.startswith("blocks "))
    segments = line[len("blocks "):].strip("▕▏").split("▕")
    assert len(segments) == 4  # one segment per block, the boundaries drawn
    assert set(segments[0]) == {"█"} and set(segments[3]) == {"░"}
    assert 0 < segments[1].count("█") < len(segments[1])


def _styles_of(frame, width=80):
    """(text, style) for every canvas glyph of FRAME rendered on a colour console."""
    c = console(width, 30, color=True)
    lines = c.render_lines(frame, c.options, pad=False)
    found = []
    for line in lines[2:]:
        text = "".join(seg.text for seg in line)
        if text.startswith("blocks "):
            break
        found += [(seg.text, seg.style) for seg in line if seg.text]
    return found


def test_new_tokens_highlighted_and_coloured_by_confidence():
    info, steps, _ = fake_run(gen_length=16, steps=16, block_length=16, hostile=False)
    state = ViewState(info)
    for s in steps[:5]:
        state.apply(s)
    segs = _styles_of(state.frame(0.0))
    new = [(t, st) for t, st in segs if st and st.bgcolor is not None]
    assert len(new) == len(steps[4].positions) == 1  # one token a step: exactly one highlighted
    older = [(t, st) for t, st in segs if st and st.bgcolor is None and t.strip() and t != MASK_GLYPH]
    assert len(older) == 4
    # Colours follow confidence: each committed position has the colour of its confidence.
    frame = state.frame(0.0)
    spans = frame.canvas.spans  # one span per position of the generated region
    for s in steps[:5]:
        for p, c in zip(s.positions, s.confidences):
            rgb = confidence_rgb(round(c * (LEVELS - 1)) / (LEVELS - 1))
            style = spans[p - info.gen_start].style
            got = (style.bgcolor if s is steps[4] else style.color).triplet
            assert tuple(got) == rgb
    assert len({tuple(st.color.triplet) for _, st in older}) > 1  # not all one colour
    masks = [st for t, st in segs if MASK_GLYPH in t]
    assert masks and all(st.bgcolor is None for st in masks)
    # The last frame has no highlight left.
    for s in steps[5:]:
        state.apply(s)
    assert not [st for _, st in _styles_of(state.frame(0.0, final=True)) if st and st.bgcolor is not None]


def test_long_canvases_wrap_to_the_width():
    info, steps, _ = fake_run(gen_length=128, steps=32, block_length=32)
    state = ViewState(info)
    for s in steps[:10]:
        state.apply(s)
    for width in (24, 40, 61):
        out = draw(state.frame(0.0).at(crop=False), width=width, height=200)
        assert all(cell_len(line) <= width for line in out.splitlines()), width
        assert "".join(canvas_lines(out)).count(MASK_GLYPH) == state.masks_left


def test_tall_canvases_are_cropped_around_the_active_block():
    info, steps, _ = fake_run(gen_length=128, steps=32, block_length=32)
    state = ViewState(info)
    for s in steps[:28]:  # block 4 active, near the end of the canvas
        state.apply(s)
    out = draw(state.frame(0.0), width=20, height=12)
    lines = out.splitlines()
    assert len(lines) <= 12
    assert any("more line" in line and "above" in line for line in lines)
    assert any(MASK_GLYPH in line for line in canvas_lines(out))  # the active block is on screen
    full = draw(state.frame(0.0, final=True).at(crop=False), width=20, height=12)
    assert len(full.splitlines()) > 12 and "more line" not in full  # the last frame is whole


def test_token_text_cannot_break_the_layout():
    info, steps, _ = fake_run(gen_length=32, steps=32, block_length=32)
    state = ViewState(info)
    for s in steps:
        state.apply(s)
    out = draw(state.frame(0.0, final=True).at(crop=False), width=200)
    assert "\x1b" not in out and "\u202e" not in out  # no escape sequence, no bidi override
    text = "".join(canvas_lines(out))
    assert "↵" in text and "\\x1b[31mRED" in text and "\\u202e" in text and "<script>" in text
    assert len(canvas_lines(out)) == 1  # the newline token did not break the line


@pytest.mark.parametrize("raw,shown", [
    ("a\nb", "a↵b"), ("\t", "⇥"), ("\r", "␍"), ("\x00\x7f", "\\x00\\x7f"), ("\x9b", "\\x9b"),
    ("\u2028", "\\u2028"), ("\u200b", "\\u200b"), ("\ud800", "\\ud800"), ("\U000e0001", "\\U000e0001"),
    ("日本 ok", "日本 ok"), ("é", "é"),
])
def test_visible(raw, shown):
    assert visible(raw) == shown


def test_confidence_scale_per_algorithm():
    assert unit_confidence([0.25, 1.5, -1], "low-confidence").tolist() == [0.25, 1.0, 0.0]
    np.testing.assert_allclose(unit_confidence([0.0, -np.log(4)], "entropy"), [1.0, 0.25])
    assert np.isnan(unit_confidence([np.nan], "margin")[0])


def _live(delay=0.0, fps=1e9, width=100):
    c = console(width, 24, terminal=True)
    return c, LiveView(c, delay=delay, fps=fps, auto_refresh=False)


def test_live_view_draws_steps_and_leaves_the_final_frame():
    info, steps, result = fake_run()
    c, view = _live()
    view.start(info)
    for s in steps:
        view.step(s)
    view.finish(result)
    view.close()
    out = c.file.getvalue()
    assert out.count("dlm · fake.gguf") >= len(steps)  # a frame per step (no real cap)
    assert out.index(HIDE) < out.rindex(SHOW)
    tail = out[out.rindex("dlm · fake.gguf"):]
    assert "done · finish: eos · 16 steps" in tail and "hello world" in tail


def test_close_restores_the_terminal_when_interrupted():
    info, steps, _ = fake_run()
    c, view = _live()
    with pytest.raises(KeyboardInterrupt):
        try:
            view.start(info)
            view.step(steps[0])
            raise KeyboardInterrupt
        finally:
            view.close()
    out = c.file.getvalue()
    assert out.rindex(SHOW) > out.rindex(HIDE)
    assert "stopped" in out[out.rindex("dlm · fake.gguf"):]
    view.close()  # twice is fine
    LiveView(console(terminal=True)).close()  # never started: nothing to do


def test_redraws_are_capped():
    info, steps, result = fake_run(gen_length=64, steps=64, block_length=64)
    c, view = _live(fps=5.0)
    view.start(info)
    t0 = time.perf_counter()
    for s in steps:
        view.step(s)
    elapsed = time.perf_counter() - t0
    view.close()
    frames = c.file.getvalue().count("dlm · fake.gguf")
    assert frames <= 2 + 5 * elapsed + 1, frames  # start + cap + final, not one per step


def test_delay_paces_the_steps():
    info, steps, _ = fake_run(gen_length=8, steps=4, block_length=8)
    c, view = _live(delay=0.05)
    view.start(info)
    t0 = time.perf_counter()
    for s in steps:
        view.step(s)
    assert time.perf_counter() - t0 >= 0.2
    view.close()


def test_native_log_goes_above_the_view_not_through_it():
    from dlmcli.runtime import native

    info, steps, _ = fake_run()
    c, view = _live()
    was_verbose, before = native._state["verbose"], sys.stderr
    native.set_verbose(True)
    try:
        view.start(info)
        assert sys.stderr is not before  # Rich holds stderr while the view is live
        native._on_log(2, b"llama log line\n", None)
        view.step(steps[0])
        view.close()
    finally:
        native.set_verbose(was_verbose)
    assert sys.stderr is before
    out = c.file.getvalue()
    assert "llama log line" in out
    # The log line is printed on its own line, and the view is drawn again after it.
    assert re.search(r"llama log line\s*\n", out) and out.rindex("dlm · fake.gguf") > out.index("llama log line")


def test_views_split_an_infill_as_the_engine_does(tmp_path):
    # 9 infill positions in blocks of 4: the engine runs blocks of 4, 4 and 1. The live view and the
    # pictures used to redraw the split as 3, 3, 3 (an even split into the engine's number of blocks).
    from dlmcli.render.picture import Run
    from dlmcli.render.trace import read_trace

    from .conftest import run_dlm

    path = tmp_path / "infill.jsonl"
    r = run_dlm("infill", "-m", "tiny-llada", "--block-length", "4", "--steps", "9", "--trace", path,
                "reverse hello = [MASK:9]")
    assert r.returncode == 0, r.stderr
    trace = read_trace(path)
    gs = trace.info.gen_start
    engine = {s.block: (s.block_start - gs, s.block_end - gs) for s in trace.steps}
    assert engine == {0: (0, 4), 1: (4, 8), 2: (8, 9)}
    state = ViewState(trace.info)
    assert state.blocks()[1] == (4, 4, 1)  # before the first step too
    for step in trace.steps:
        state.apply(step)
        lo, hi = engine[step.block]
        frame = state.frame(0.0)
        assert frame.block_size == (4, 4, 1)
        # The masks drawn as the active block's are exactly the engine's block's masks.
        masks = [i for i in range(len(state.tokens)) if state.tokens[i] == trace.info.mask_id]
        active = [i for i in masks if _drawn_active(state, i)]
        assert active == [i for i in masks if lo <= i < hi], (step.index, active)
    run = Run.of(trace)
    assert [run.block_bounds(b) for b in range(run.n_blocks)] == [(0, 4), (4, 8), (8, 9)]


def _drawn_active(state, i) -> bool:
    from dlmcli.render.view import MASK_ACTIVE

    text, _ = state._canvas_text(final=False)
    at = sum(len(MASK_GLYPH if t == state.mask_id else state.glyph(int(t))) for t in state.tokens[:i])
    return any(s.style == MASK_ACTIVE for s in text.spans if s.start <= at < s.end)
