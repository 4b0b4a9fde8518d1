"""Token text made safe to show, and the colours every picture of a run shares.

Token text is untrusted (it comes from a model file): nothing here lets it move the cursor, break a
line, reorder text or smuggle markup. Escaping for HTML/SVG happens on top of ``visible``.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np

MASK_GLYPH = "░"  # a position still masked
EOG_GLYPH = "∎"  # an end-of-generation token (its own text is empty)
EMPTY_GLYPH = "◇"  # a token whose text is empty (control tokens)

_NAMED = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """TEXT with newlines and tabs as glyphs and every control/format/unassigned character escaped."""
    out = []
    for ch in text:
        named = _NAMED.get(ch)
        if named is not None:
            out.append(named)
            continue
        cat = unicodedata.category(ch)
        # C*: controls, format (bidi overrides, zero-width), surrogates, private, unassigned;
        # Zl/Zp: U+2028/2029 would break a line.
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
        else:
            out.append(ch)
    return "".join(out)


def token_glyph(text: str, *, is_eog: bool = False) -> str:
    """What one committed token looks like in a view: its visible text, or a glyph when it has none."""
    if is_eog:
        return EOG_GLYPH
    shown = visible(text)
    return shown if shown else EMPTY_GLYPH


def unit_confidence(values, algorithm: str) -> np.ndarray:
    """Confidences on one 0..1 scale for colouring (NaN stays NaN: filled, not chosen).

    The engine's scores differ by algorithm: probabilities (low-confidence, origin, random),
    top-1 minus top-2 probability (margin), or minus the entropy (entropy), mapped here to
    exp(-H), which is 1 for a certain prediction.
    """
    v = np.asarray(values, dtype=np.float64)
    if algorithm == "entropy":
        v = np.exp(np.minimum(v, 0.0))
    return np.clip(v, 0.0, 1.0)


# Red (unsure) through amber to green (sure): readable on dark and light backgrounds.
_CONF_STOPS = ((215, 48, 39), (244, 109, 67), (253, 174, 97), (166, 217, 106), (26, 152, 80))
# Commit order, early to late (viridis-like): dark purple, blue, teal, green, yellow.
_STEP_STOPS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
NAN_RGB = (150, 150, 150)


def _ramp(stops, u: float) -> tuple[int, int, int]:
    if u is None or (isinstance(u, float) and math.isnan(u)):
        return NAN_RGB
    u = min(max(float(u), 0.0), 1.0) * (len(stops) - 1)
    i = min(int(u), len(stops) - 2)
    f = u - i
    a, b = stops[i], stops[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def confidence_rgb(u: float) -> tuple[int, int, int]:
    return _ramp(_CONF_STOPS, u)


def order_rgb(u: float) -> tuple[int, int, int]:
    """Colour for 'committed at fraction U of the run'."""
    return _ramp(_STEP_STOPS, u)


def hex_rgb(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def ink_for(rgb) -> str:
    """Black or white, whichever reads better on background RGB."""
    r, g, b = rgb
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"
