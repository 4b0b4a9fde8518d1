"""Traces (write, read back, partial), 'dlm replay', and the SVG/HTML pictures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dlmcli.errors import DlmError
from dlmcli.render.picture import to_html, to_svg
from dlmcli.render.trace import TraceWriter, read_trace

from .conftest import run_dlm
from .fake_run import MASK, SCRIPT, fake_run, token_text

DATA = Path(__file__).parent / "data"


def write_trace(path, finish=True, **kw):
    info, steps, result = fake_run(**kw)
    w = TraceWriter(path)
    w.start(info)
    for s in steps:
        w.step(s)
    if finish:
        w.finish(result)
    w.close()
    return info, steps, result


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "run.jsonl"
    info, steps, result = write_trace(path, early_stop=True)
    assert any(np.isnan(s.confidences).any() for s in steps)  # early stop's NaN confidences included
    t = read_trace(path)
    assert t.complete and not t.torn and len(t.steps) == len(steps)
    for got, want in zip(t.steps, steps):
        for f in ("index", "planned_steps", "block", "n_blocks", "block_start", "block_end", "gen_start", "masks_left",
                  "forward_s", "sampling_s", "seq"):
            assert getattr(got, f) == getattr(want, f), f
        assert got.canvas.dtype == np.int32 and got.canvas.tolist() == want.canvas.tolist()
        assert got.positions.tolist() == want.positions.tolist()
        assert got.tokens.tolist() == want.tokens.tolist()
        np.testing.assert_array_equal(got.confidences, want.confidences)  # bit-exact, NaN where NaN
    i = t.info
    assert (i.model, i.prompt, i.prompt_tokens, i.canvas, i.gen_start, i.mask_id, i.params, i.eog_ids) == \
        (info.model, info.prompt, info.prompt_tokens, info.canvas, info.gen_start, info.mask_id, info.params,
         info.eog_ids)
    # Every token of the run can be drawn without the model, the mask included.
    used = {MASK} | {int(x) for s in steps for x in s.canvas} | set(info.canvas)
    assert all(i.token_text(x) == token_text(x) for x in used)
    assert t.answer() == result.text and t.end["finish_reason"] == "eos" and t.end["tokens"] == result.tokens


def test_trace_lines_are_json_with_a_header_and_an_end(tmp_path):
    path = tmp_path / "run.jsonl"
    _, steps, _ = write_trace(path)
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["header"] + ["step"] * len(steps) + ["end"]
    head = records[0]
    assert head["format"] == "dlm-trace" and head["version"] == 2
    assert {"model", "prompt", "params", "canvas", "vocab", "gen_start", "mask_id"} <= set(head)
    assert head["vocab"][str(MASK)] == "<|mask|>"
    step = records[1]
    assert "steps" not in step and step["planned_steps"] == steps[0].planned_steps
    assert {"index", "block", "canvas", "positions", "tokens", "confidences", "forward_s", "sampling_s"} <= set(step)
    assert "NaN" not in path.read_text()


def test_partial_and_torn_traces_read_as_incomplete(tmp_path):
    path = tmp_path / "cut.jsonl"
    _, steps, _ = write_trace(path, finish=False)
    t = read_trace(path)
    assert not t.complete and len(t.steps) == len(steps)
    assert t.answer().startswith("hello")
    torn = tmp_path / "torn.jsonl"
    data = path.read_bytes()
    torn.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 40])  # cut inside the last step
    t = read_trace(torn)
    assert t.torn and not t.complete and len(t.steps) == len(steps) - 1


def test_a_version_1_trace_still_replays():
    # Written by `dlm generate -m tiny-llada --trace F "reverse hello"` before version 2 renamed a step's
    # "steps" (passes planned) to "planned_steps".
    path = DATA / "trace-v1.jsonl"
    assert json.loads(path.read_text().splitlines()[1])["steps"] == 16
    t = read_trace(path)
    assert t.complete and len(t.steps) == t.end["steps"] == 8 and all(s.planned_steps == 16 for s in t.steps)
    r = run_dlm("replay", path)
    assert r.returncode == 0 and r.stdout == b"olleh\n" and r.stderr == b"", r.stderr
    r = run_dlm("replay", path, "--visual", "--speed", "0")
    assert r.returncode == 0 and "olleh" in r.stderr.decode() and "8 steps" in r.stderr.decode(), r.stderr


@pytest.mark.parametrize("content,needle", [
    (b"", "not a dlm trace"), (b"hello\n", "not a dlm trace"), (b'{"type": "step"}\n', "no header"),
    (b'{"type":"header","format":"dlm-trace","version":99}\n', "version 99"),
])
def test_not_a_trace(tmp_path, content, needle):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DlmError, match=needle):
        read_trace(path)


def test_unwritable_trace_path_is_a_clear_error(tmp_path):
    with pytest.raises(DlmError, match="cannot write the trace file"):
        TraceWriter(tmp_path / "no" / "such" / "dir" / "t.jsonl")
    with pytest.raises(DlmError, match="cannot write the trace file"):
        TraceWriter(tmp_path)  # a directory
    # The CLI says so before it loads the model: the model here does not even exist.
    r = run_dlm("generate", "-m", tmp_path / "missing.gguf", "--trace", tmp_path / "no" / "t.jsonl", "hi")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "cannot write the trace file" in lines[0], lines
    assert r.stdout == b""


def test_a_run_that_never_started_leaves_no_trace_and_keeps_an_old_one(tmp_path):
    path = tmp_path / "t.jsonl"
    TraceWriter(path).close()
    assert not path.exists()
    write_trace(path)
    old = path.read_bytes()
    r = run_dlm("generate", "-m", tmp_path / "missing.gguf", "--trace", path, "hi")
    assert r.returncode == 1 and path.read_bytes() == old  # the failed run did not clobber it
    write_trace(path, gen_length=8, steps=8, block_length=8)  # a new run replaces it entirely
    assert len(read_trace(path).steps) == 8


def test_generate_trace_then_replay_without_the_model(gguf_dir, tmp_path):
    model = tmp_path / "model.gguf"
    shutil.copy(gguf_dir / "llada.gguf", model)
    trace = tmp_path / "run.jsonl"
    gen = run_dlm("generate", "-m", model, "-n", "16", "--block-length", "8", "--trace", trace, "reverse abc")
    js = run_dlm("generate", "-m", model, "-n", "16", "--block-length", "8", "--json", "reverse abc")
    assert gen.returncode == 0, gen.stderr
    model.unlink()  # replay needs no model
    rep = run_dlm("replay", trace)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout == gen.stdout and rep.stderr == b""
    t = read_trace(trace)
    obj = json.loads(js.stdout)
    assert len(t.steps) == obj["steps"] and t.end["tokens"] == obj["tokens"]
    assert t.info.prompt_tokens == tuple(obj["prompt_tokens"])


def test_replay_of_a_partial_trace_warns_and_replays(tmp_path):
    path = tmp_path / "cut.jsonl"
    _, _, result = write_trace(path, finish=False)
    r = run_dlm("replay", path, "--visual", "--speed", "0")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "trace cut short" in err  # the last frame (stderr is not a terminal: drawn once, plain)
    assert err.strip().splitlines()[-1] == (
        f"Error: {path} is incomplete (it has no end record): the run was interrupted or is still being "
        "written; replayed the 16 steps it has, and there is no answer")
    assert r.stdout == b""  # what a cut-short run committed is not an answer (it used to be printed as one)


def test_replay_errors(tmp_path):
    r = run_dlm("replay", tmp_path / "nope.jsonl")
    assert r.returncode == 1 and r.stderr.decode().startswith("Error: trace file not found")
    path = tmp_path / "t.jsonl"
    write_trace(path)
    r = run_dlm("replay", path, "--speed", "-1")
    assert r.returncode == 2 and b"--speed" in r.stderr
    r = run_dlm("replay", path, "--svg", tmp_path / "no" / "x.svg")
    assert r.returncode == 1 and b"cannot write" in r.stderr


def test_visual_never_touches_stdout(gguf_dir):
    common = ["generate", "-m", gguf_dir / "llada.gguf", "-n", "16", "--block-length", "8", "reverse abc"]
    plain = run_dlm(*common)
    forced = run_dlm(*common, "--visual")
    assert forced.returncode == 0
    assert forced.stdout == plain.stdout and b"\x1b" not in forced.stdout
    assert b"done" in forced.stderr and b"\x1b" not in forced.stderr  # stderr is a pipe: no colour codes


# --- pictures -------------------------------------------------------------------------------


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "run.jsonl"
    write_trace(path, gen_length=32, steps=16, block_length=8)
    return read_trace(path)


def test_svg_is_well_formed_and_complete(trace):
    svg = to_svg(trace)
    root = ET.fromstring(svg.split("\n", 1)[1])  # after the XML declaration
    assert root.tag.endswith("svg")
    texts = "".join(root.itertext())
    assert "dlm · fake.gguf" in texts and "say hello" in texts and "Final text" in texts
    assert "hello world↵" in texts  # the final text, line break shown
    assert "blocks of 8" in texts and "finish: eos" in texts
    # One tooltip per position in the region-of-tokens view and one per committed cell in the timeline.
    assert svg.count("<title>position ") == 2 * 32
    assert "href" not in svg and "http://www.w3.org/2000/svg" in svg and svg.count("http") == 1


def test_token_text_cannot_inject_markup(trace):
    assert trace.token_text(SCRIPT) == "<script>alert(1)</script>"
    svg, page = to_svg(trace), to_html(trace)
    for doc in (svg, page):
        assert "<script>alert" not in doc and "\x1b" not in doc and "\u202e" not in doc
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    ET.fromstring(svg.split("\n", 1)[1])  # still well-formed
    assert len(re.findall(r"<script\b", page)) == 2  # the data block and the page's own script
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    data = re.search(r'<script type="application/json" id="dlm-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data
    obj = json.loads(data)
    assert obj["glyphs"][str(SCRIPT)] == "<script>alert(1)</script>"  # shown as text by the page
    assert "innerHTML" not in page


def test_html_slider_script_replays_every_step(trace, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's script is not run here")
    page = tmp_path / "t.html"
    page.write_text(to_html(trace))
    probe = tmp_path / "probe.js"
    probe.write_text(r"""
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const data = html.match(/<script type="application\/json" id="dlm-data">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script>([\s\S]*?)<\/script>/)[1];
function el() { return {children: [], textContent: '', className: '', style: {}, value: '0', on: {},
  appendChild(c) { this.children.push(c); }, addEventListener(k, f) { this.on[k] = f; }}; }
const E = {'dlm-data': {textContent: data}, canvas: el(), step: el(), label: el(), status: el(), play: el()};
global.document = {getElementById: id => E[id], createElement: el};
global.setInterval = () => 1; global.clearInterval = () => {};
eval(code);
const out = [];
for (let k = 0; k <= JSON.parse(data).steps.length; k++) {
  E.step.value = String(k); E.step.on.input();
  out.push({text: E.canvas.children.map(s => s.textContent).join(''),
            fresh: E.canvas.children.filter(s => s.className === 'new').length});
}
console.log(JSON.stringify(out));
""")
    got = json.loads(subprocess.run([node, str(probe), str(page)], capture_output=True, check=True).stdout)
    from dlmcli.render.picture import Run

    run = Run.of(trace)
    gs = trace.info.gen_start
    for k, frame in enumerate(got):
        canvas = trace.info.canvas if k == 0 else tuple(trace.steps[k - 1].canvas)
        assert frame["text"] == "".join(run.glyph(int(t)) for t in canvas[gs:]), k
        assert frame["fresh"] == (0 if k == 0 else len(trace.steps[k - 1].positions))


def test_replay_writes_pictures(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path)
    svg, page = tmp_path / "out.svg", tmp_path / "out.html"
    r = run_dlm("replay", path, "--svg", svg, "--html", page)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr.decode().splitlines() == [f"Wrote {svg}", f"Wrote {page}"]
    assert svg.read_text().startswith("<?xml") and page.read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_delay_without_the_view_still_paces_the_run(gguf_dir):
    import time

    args = ["generate", "-m", gguf_dir / "llada.gguf", "-n", "8", "--block-length", "8", "reverse abc"]
    t0 = time.perf_counter()
    fast = run_dlm(*args)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = run_dlm(*args, "--delay", "0.1")
    t_slow = time.perf_counter() - t0
    assert slow.stdout == fast.stdout and slow.stderr == fast.stderr
    assert t_slow - t_fast >= 0.6  # 8 steps x 0.1 s, with room for noise


def test_replay_speed_is_steps_per_second(tmp_path):
    import io
    import time

    from rich.console import Console

    from dlmcli.render.commands import replay_trace

    path = tmp_path / "t.jsonl"
    write_trace(path)  # 16 steps
    t = read_trace(path)
    out = io.StringIO()
    t0 = time.perf_counter()
    replay_trace(t, speed=40.0, console=Console(file=out, force_terminal=True, color_system=None, width=80))
    assert 16 / 40 <= time.perf_counter() - t0 < 16 / 40 + 2
    t0 = time.perf_counter()
    replay_trace(t, speed=0, console=Console(file=io.StringIO(), force_terminal=True, width=80))
    assert time.perf_counter() - t0 < 0.4
    frame = out.getvalue()[out.getvalue().rindex("dlm · fake.gguf"):]
    assert "done · finish: eos · 16 steps" in frame and "hello world" in frame
