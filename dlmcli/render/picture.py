"""Pictures of a whole run from its trace: a standalone SVG, and an HTML page with a step slider.

Both show the same three things: the generated region with every token coloured by the step that
committed it, the final text, and a timeline (rows = steps, columns = positions) where each
position turns from grey (masked) to its confidence colour at the step that committed it, inside
the staircase of active blocks. Files are self-contained (no fonts, scripts or images fetched).
Token text is untrusted: it goes through ``visible`` and then XML escaping, and the HTML page's
script only ever sets ``textContent``.
"""

from __future__ import annotations

import html
import json
import math
import unicodedata
from dataclasses import dataclass
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

from .text import (MASK_GLYPH, confidence_rgb, hex_rgb, ink_for, order_rgb, token_glyph, unit_confidence,
                   visible)
from ..engine.schedule import Schedule
from .trace import Trace
from .view import LEVELS, short_model_name

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', 'Liberation Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
FONT_PX = 13
CHAR_W = 7.9  # advance of one monospace cell at FONT_PX (0.6 em, rounded up a little)
MARGIN = 24
WIDTH = 960  # content width in px
MASK_FILL = "#e6e6e6"
ACTIVE_FILL = "#fff1c2"


def esc(text: str) -> str:
    """Visible, then XML-escaped (quotes too, so it is safe in attributes)."""
    return _xml_escape(visible(text), {'"': "&quot;", "'": "&#39;"})


def cells(text: str) -> int:
    """Terminal-like width: wide East Asian characters count 2, combining marks 0."""
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def _clip(text: str, width: int) -> str:
    out: list[str] = []
    n = 0
    for ch in text:
        w = cells(ch)
        if n + w > width:
            return "".join(out[:-1] if out else out) + "…"
        out.append(ch)
        n += w
    return "".join(out)


@dataclass
class Run:
    """What the pictures need, computed once from a trace."""

    trace: Trace
    region: int
    tokens: np.ndarray  # final tokens of the generated region
    commit: np.ndarray  # step that (last) committed each position; -1: never
    conf: np.ndarray  # 0..1 at commit; NaN: filled by early stop or never committed
    n_steps: int
    plan: Schedule  # the blocks as the engine split them
    block_rows: list  # (block, first step, last step) windows, in step order

    @property
    def block_len(self) -> int:
        return self.plan.block_length

    @property
    def n_blocks(self) -> int:
        return self.plan.n_blocks

    def block_bounds(self, block: int) -> tuple[int, int]:
        """Positions [lo, hi) of BLOCK in the generated region."""
        return self.plan.bounds(block)

    @classmethod
    def of(cls, trace: Trace) -> "Run":
        info = trace.info
        gs = info.gen_start
        tokens = np.array(trace.final_canvas[gs:], dtype=np.int64)
        region = len(tokens)
        commit = np.full(region, -1, dtype=np.int64)
        conf = np.full(region, np.nan)
        algorithm = str(info.params.get("algorithm", "low-confidence"))
        windows: list = []
        for s in trace.steps:
            pos = np.asarray(s.positions, dtype=np.int64) - gs
            ok = (pos >= 0) & (pos < region)
            commit[pos[ok]] = s.index
            conf[pos[ok]] = unit_confidence(np.asarray(s.confidences)[ok], algorithm)
            if windows and windows[-1][0] == s.block:
                windows[-1][2] = s.index
            else:
                windows.append([s.block, s.index, s.index])
        return cls(trace, region, tokens, commit, conf, len(trace.steps), Schedule.from_dict(info.params, region),
                   windows)

    def glyph(self, token: int) -> str:
        info = self.trace.info
        if token == info.mask_id:
            return MASK_GLYPH
        return token_glyph(self.trace.token_text(token), is_eog=token in info.eog_ids)

    def order_colour(self, p: int) -> str:
        c = self.commit[p]
        if c < 0:
            return MASK_FILL
        return hex_rgb(order_rgb(c / max(self.n_steps - 1, 1)))

    def conf_colour(self, p: int) -> str:
        return hex_rgb(confidence_rgb(self.conf[p]))

    def tooltip(self, p: int) -> str:
        tok = int(self.tokens[p])
        c = self.commit[p]
        u = self.conf[p]
        when = f"step {c + 1}" if c >= 0 else "never committed"
        how = "" if c < 0 else " · filled by early stop" if math.isnan(u) else f" · confidence {u:.2f}"
        return f"position {p} · {when}{how} · token {tok} {json.dumps(self.trace.token_text(tok))}"

    def summary(self) -> list[str]:
        p = self.trace.info.params
        bits = [f"{p.get('schedule', '?')} schedule", str(p.get("algorithm", "?")),
                f"{p.get('steps', '?')} steps planned", f"{self.n_steps} run", f"{self.region} positions"]
        if p.get("schedule") == "block":
            bits.append(f"blocks of {p.get('block_length', '?')}")
        bits.append(f"temperature {p.get('temperature', '?')}")
        if p.get("seed") is not None:
            bits.append(f"seed {p['seed']}")
        end = self.trace.end
        if end is not None:
            tail = f"finish: {end.get('finish_reason', '?')}, {len(end.get('tokens', []))} tokens"
        else:
            tail = f"trace cut short after {self.n_steps} steps (no end record)"
        return [" · ".join(bits), tail]


# --- SVG ---------------------------------------------------------------------------------------


def _answer_cells(run: Run, x0: float, y0: float, width: float, out: list) -> float:
    """The generated region as wrapped token cells coloured by commit step; returns the height used."""
    x, y, h, gap = x0, y0, 22, 3
    for p in range(run.region):
        tok = int(run.tokens[p])
        glyph = _clip(run.glyph(tok), 24)
        w = max(1, cells(glyph)) * CHAR_W + 8
        if x + w > x0 + width and x > x0:
            x, y = x0, y + h + gap
        fill = run.order_colour(p)
        ink = ink_for(tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5)))
        out.append(f'<g><title>{esc(run.tooltip(p))}</title>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="3" fill="{fill}"/>'
                   f'<text class="m" x="{x + 4:.1f}" y="{y + 15.5:.1f}" fill="{ink}" xml:space="preserve">'
                   f'{esc(glyph)}</text></g>')
        x += w + gap
    return y + h - y0


def visible_lines(text: str) -> list[str]:
    """TEXT made visible, keeping its line breaks (each shown as ↵ at the end of its line)."""
    parts = text.split("\n")
    return [visible(p) + ("↵" if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def _wrap(text: str, width_cells: int, max_lines: int = 40) -> list[str]:
    lines = []
    for part in visible_lines(text):
        cur: list[str] = []
        n = 0
        for ch in part:
            w = cells(ch)
            if n + w > width_cells:
                lines.append("".join(cur))
                cur, n = [], 0
            cur.append(ch)
            n += w
        lines.append("".join(cur))
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1][:-1] + "…"]
    return lines


def _legend_ramp(x: float, y: float, colour, left: str, right: str, out: list, n: int = 24) -> None:
    out.append(f'<text class="s" x="{x:.1f}" y="{y + 10:.1f}">{esc(left)}</text>')
    x += len(left) * 6.5 + 6
    for i in range(n):
        out.append(f'<rect x="{x + i * 6:.1f}" y="{y:.1f}" width="6" height="12" fill="{hex_rgb(colour(i / (n - 1)))}"/>')
    out.append(f'<text class="s" x="{x + n * 6 + 6:.1f}" y="{y + 10:.1f}">{esc(right)}</text>')


def _timeline(run: Run, x0: float, y0: float, out: list) -> float:
    """Rows = steps, columns = positions; returns the height used."""
    S, R = max(run.n_steps, 1), max(run.region, 1)
    cw = max(2, min(16, int((WIDTH - 40) // R)))
    ch = max(1, min(14, int(560 // S)))
    gx, gy = x0 + 40, y0 + 16
    gw, gh = R * cw, S * ch
    out.append(f'<rect x="{gx}" y="{gy}" width="{gw}" height="{gh}" fill="{MASK_FILL}"/>')
    for block, first, last in run.block_rows:  # the staircase: where each block was active
        lo, hi = run.block_bounds(block)
        bx, bw = gx + lo * cw, (hi - lo) * cw
        out.append(f'<rect x="{bx}" y="{gy + first * ch}" width="{bw}" height="{(last - first + 1) * ch}" '
                   f'fill="{ACTIVE_FILL}"/>')
    text_fits = cw >= 11 and ch >= 12
    for p in range(run.region):
        c = int(run.commit[p])
        if c < 0:
            continue
        x = gx + p * cw
        colour = run.conf_colour(p)
        out.append(f'<rect x="{x}" y="{gy + c * ch}" width="{cw}" height="{(S - c) * ch}" fill="{colour}" '
                   f'fill-opacity="0.45"/>')
        tip = f"<title>{esc(run.tooltip(p))}</title>"
        out.append(f'<g>{tip}<rect x="{x}" y="{gy + c * ch}" width="{cw}" height="{ch}" fill="{colour}" '
                   f'stroke="#222" stroke-width="{0.6 if ch >= 3 else 0}"/>')
        if text_fits:
            g = run.glyph(int(run.tokens[p]))[:1]  # the first character; the tooltip has it all
            ink = ink_for(confidence_rgb(run.conf[p]))
            out.append(f'<text class="m" x="{x + cw / 2:.1f}" y="{gy + c * ch + ch - 3:.1f}" font-size="{min(12, ch - 1)}" '
                       f'text-anchor="middle" fill="{ink}">{esc(g)}</text>')
        out.append("</g>")
    for b in range(1, run.n_blocks):  # block boundaries
        bx = gx + run.block_bounds(b)[0] * cw
        out.append(f'<line x1="{bx}" y1="{gy - 4}" x2="{bx}" y2="{gy + gh}" stroke="#555" stroke-dasharray="3 2"/>')
    every = max(1, math.ceil(S / 10))
    for s in range(0, S, every):
        out.append(f'<text class="s" x="{gx - 6}" y="{gy + s * ch + min(ch, 10)}" text-anchor="end">{s + 1}</text>')
    pe = max(1, math.ceil(R / 12))
    for p in range(0, R, pe):
        out.append(f'<text class="s" x="{gx + p * cw}" y="{gy - 5}">{p}</text>')
    out.append(f'<text class="s" x="{gx - 6}" y="{gy - 5}" text-anchor="end">step</text>')
    return gh + 16


def to_svg(trace: Trace, *, standalone: bool = True) -> str:
    run = Run.of(trace)
    info = trace.info
    body: list[str] = []
    y: float = MARGIN
    body.append(f'<text class="t" x="{MARGIN}" y="{y + 16}">dlm · {esc(short_model_name(info.model))}</text>')
    y += 28
    prompt = _wrap(info.prompt, int(WIDTH / CHAR_W) - 8, max_lines=4) if info.prompt else []
    for i, line in enumerate(prompt):
        lead = "prompt  " if i == 0 else "        "
        body.append(f'<text class="m" x="{MARGIN}" y="{y + 13}" xml:space="preserve">{esc(lead)}{_xml_escape(line)}</text>')
        y += 18
    for line in run.summary():
        body.append(f'<text class="s" x="{MARGIN}" y="{y + 12}">{esc(line)}</text>')
        y += 17
    y += 14

    body.append(f'<text class="h" x="{MARGIN}" y="{y + 12}">Generated region, coloured by the step that committed each token</text>')
    _legend_ramp(MARGIN + 520, y + 2, order_rgb, "step 1", f"step {max(run.n_steps, 1)}", body)
    y += 24
    y += _answer_cells(run, MARGIN, y, WIDTH, body) + 20

    body.append(f'<text class="h" x="{MARGIN}" y="{y + 12}">Final text</text>')
    y += 22
    answer = trace.answer()
    for line in _wrap(answer, int(WIDTH / CHAR_W)) if answer else ["(empty)"]:
        body.append(f'<text class="m" x="{MARGIN}" y="{y + 13}" xml:space="preserve">{_xml_escape(line)}</text>')
        y += 18
    y += 18

    body.append(f'<text class="h" x="{MARGIN}" y="{y + 12}">Timeline: one row per step; a position takes its confidence colour when '
                f'committed (outlined); yellow: the active block</text>')
    y += 20
    _legend_ramp(MARGIN, y, confidence_rgb, "confidence low", "high", body)
    y += 22
    y += _timeline(run, MARGIN, y, body) + MARGIN

    width = MARGIN * 2 + WIDTH
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else ""
    return (
        f'{head}<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{int(y)}" '
        f'viewBox="0 0 {width} {int(y)}" role="img" aria-label="dlm denoising trace">'
        # No 'fill' on plain text in CSS: it would beat the cells' fill attributes (their ink).
        f'<style>text{{font-family:{SANS};font-size:12px}}'
        f'.m{{font-family:{FONT};font-size:{FONT_PX}px}}.t{{font-size:18px;font-weight:600;fill:#222}}'
        f'.h{{font-size:13px;font-weight:600;fill:#222}}.s{{font-size:11px;fill:#555}}</style>'
        f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(body) + "</svg>\n"
    )


# --- HTML --------------------------------------------------------------------------------------


def _json_for_html(obj) -> str:
    # Inside <script type="application/json">: nothing may close the element or open a comment.
    return (json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


_HTML_STYLE = """
body{font-family:%(sans)s;margin:24px;color:#222;background:#fff;max-width:1040px}
h1{font-size:20px;margin:0 0 6px}h2{font-size:15px;margin:22px 0 8px}
.mono,.canvas{font-family:%(mono)s;font-size:15px}
.meta{color:#555;font-size:13px;margin:2px 0}
.controls{display:flex;gap:12px;align-items:center;margin:8px 0}
.controls input{flex:1}
.canvas{background:#1e1e1e;color:#ddd;padding:12px 14px;border-radius:6px;line-height:1.55;
 white-space:pre-wrap;word-break:break-all;min-height:3em}
.canvas span.mask-active{color:#b3b3b3}.canvas span.mask{color:#5a5a5a}
.canvas span.new{color:#000;font-weight:700;border-radius:2px}
.status{font-family:%(mono)s;font-size:13px;color:#444;margin-top:6px}
.answer{font-family:%(mono)s;white-space:pre-wrap;background:#f4f4f4;padding:10px 12px;border-radius:6px}
svg{max-width:100%%;height:auto}
"""

_HTML_SCRIPT = """
(function(){
  var D = JSON.parse(document.getElementById('dlm-data').textContent);
  var box = document.getElementById('canvas'), slider = document.getElementById('step');
  var label = document.getElementById('label'), status = document.getElementById('status');
  var play = document.getElementById('play'), timer = null;
  var n = D.initial.length;
  var spans = [];
  for (var i = 0; i < n; i++) { var s = document.createElement('span'); box.appendChild(s); spans.push(s); }
  function glyph(t) { return t === D.mask ? D.maskGlyph : (D.glyphs[t] !== undefined ? D.glyphs[t] : '\\u27e8' + t + '\\u27e9'); }
  function draw(k) {
    var toks = D.initial.slice(), conf = new Array(n).fill(null), fresh = {}, filled = {};
    for (var s = 0; s < k; s++) {
      var st = D.steps[s];
      for (var j = 0; j < st.p.length; j++) {
        toks[st.p[j]] = st.t[j]; conf[st.p[j]] = st.c[j];
        if (st.c[j] === null) filled[st.p[j]] = 1;
        if (s === k - 1) fresh[st.p[j]] = 1;
      }
    }
    var block = k > 0 ? D.steps[k - 1].b : 0, lo = block * D.blockLen, hi = lo + D.blockLen, left = 0;
    for (var i = 0; i < n; i++) {
      var sp = spans[i], t = toks[i];
      sp.textContent = glyph(t);
      sp.className = ''; sp.style.color = ''; sp.style.background = '';
      if (t === D.mask) { left++; sp.className = (i >= lo && i < hi && k < D.steps.length) ? 'mask-active' : 'mask'; continue; }
      if (filled[i] || conf[i] === null) { sp.style.color = '#888'; continue; }
      var col = D.palette[Math.round(conf[i] * (D.palette.length - 1))];
      if (fresh[i]) { sp.className = 'new'; sp.style.background = col; } else { sp.style.color = col; }
    }
    label.textContent = 'step ' + k + '/' + D.steps.length;
    status.textContent = k === 0 ? 'the initial canvas: ' + left + ' masks'
      : 'block ' + (block + 1) + '/' + D.nBlocks + ' \\u00b7 ' + left + ' masks left \\u00b7 ' +
        (k > 0 ? D.steps[k - 1].p.length : 0) + ' committed at this step';
  }
  slider.addEventListener('input', function(){ draw(+slider.value); });
  play.addEventListener('click', function(){
    if (timer) { clearInterval(timer); timer = null; play.textContent = '\\u25b6 play'; return; }
    if (+slider.value >= D.steps.length) slider.value = 0;
    play.textContent = '\\u275a\\u275a pause';
    timer = setInterval(function(){
      if (+slider.value >= D.steps.length) { clearInterval(timer); timer = null; play.textContent = '\\u25b6 play'; return; }
      slider.value = +slider.value + 1; draw(+slider.value);
    }, 1000 / D.fps);
  });
  draw(+slider.value);
})();
"""


def _answer_html(text: str) -> str:
    if not text:
        return "(empty)"
    return "\n".join(html.escape(line, quote=True) for line in visible_lines(text))


def to_html(trace: Trace) -> str:

    run = Run.of(trace)
    info = trace.info
    gs = info.gen_start
    ids = {int(t) for t in run.tokens} | {int(t) for s in trace.steps for t in s.tokens} | \
        {int(t) for t in info.canvas[gs:]}
    algorithm = str(info.params.get("algorithm", "low-confidence"))
    data = {
        "mask": int(info.mask_id), "maskGlyph": MASK_GLYPH, "initial": [int(t) for t in info.canvas[gs:]],
        "glyphs": {str(t): run.glyph(t) for t in sorted(ids)},
        "steps": [{"p": (np.asarray(s.positions) - gs).tolist(), "t": np.asarray(s.tokens).tolist(),
                   "c": [None if math.isnan(u) else round(float(u), 4)
                         for u in unit_confidence(s.confidences, algorithm)], "b": int(s.block)}
                  for s in trace.steps],
        "blockLen": run.block_len, "nBlocks": run.n_blocks, "fps": 8,
        "palette": [hex_rgb(confidence_rgb(k / (LEVELS - 1))) for k in range(LEVELS)],
    }
    e = lambda s: html.escape(visible(s), quote=True)  # noqa: E731
    title = f"dlm · {short_model_name(info.model)}"
    meta = "".join(f'<p class="meta">{e(line)}</p>' for line in run.summary())
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
        f"<style>{_HTML_STYLE % {'sans': SANS, 'mono': FONT}}</style></head><body>\n"
        f"<h1>{e(title)}</h1>\n"
        f'<p class="meta mono">prompt: {e(info.prompt)}</p>\n{meta}\n'
        "<h2>Step by step</h2>\n"
        '<div class="controls"><button id="play" type="button">\u25b6 play</button>'
        f'<input id="step" type="range" min="0" max="{run.n_steps}" value="{run.n_steps}" aria-label="step">'
        '<span id="label" class="mono"></span></div>\n'
        '<div id="canvas" class="canvas"></div><div id="status" class="status"></div>\n'
        "<h2>Final text</h2>\n"
        f'<div class="answer">{_answer_html(trace.answer())}</div>\n'
        "<h2>Whole run</h2>\n" + to_svg(trace, standalone=False) +
        f'<script type="application/json" id="dlm-data">{_json_for_html(data)}</script>\n'
        f"<script>{_HTML_SCRIPT}</script>\n</body></html>\n"
    )
