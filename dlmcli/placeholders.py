"""Infill templates and --force specs: pure text parsing, no model, no llama.cpp.

(Not named `infill`: a submodule of that name would shadow the public function `dlmcli.infill`.)

A template is TEXT with placeholders: ``[MASK]`` is one position to fill, ``[MASK:N]`` is N
positions. Everything else is fixed text, kept verbatim in the output. Escapes (docs/infill.md):
backslashes mean something only directly before ``[MASK``, where a run of 2k backslashes becomes k
backslashes followed by a placeholder and a run of 2k+1 becomes k backslashes followed by a literal
``[MASK``. Any other unescaped ``[MASK`` is an error, so a typo never silently becomes fixed text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

from .errors import UsageError

OPEN = "[MASK"
_PLACEHOLDER = re.compile(r"\[MASK(?::(-?\d+))?\]")
_MAX_DIGITS = 9  # a billion positions is beyond any context; keeps int() cheap
_HINT = "write [MASK] for one position, [MASK:N] for N, or \\[MASK for a literal '[MASK'"


@dataclass(frozen=True)
class Span:
    """One placeholder: ``length`` positions to fill."""

    length: int  # positions (tokens) to fill
    at: int  # character offset of the placeholder in the template, for messages
    source: str  # the placeholder as written, e.g. "[MASK:5]"


Piece = Union[str, Span]  # a str is fixed text, already unescaped


def parse(text: str) -> list[Piece]:
    """Split TEXT into fixed pieces (str, never empty) and Spans, in order.

    Raises UsageError for a bad placeholder (N < 1, unterminated or garbled) or a TEXT with none.
    """
    pieces: list[Piece] = []
    buf: list[str] = []
    pos = 0
    while True:
        hit = text.find(OPEN, pos)
        if hit < 0:
            buf.append(text[pos:])
            break
        run = hit
        while run > pos and text[run - 1] == "\\":
            run -= 1
        n_back = hit - run
        buf.append(text[pos:run] + "\\" * (n_back // 2))
        if n_back % 2:  # escaped: a literal "[MASK"
            buf.append(OPEN)
            pos = hit + len(OPEN)
            continue
        m = _PLACEHOLDER.match(text, hit)
        if m is None:
            raise UsageError(f"bad placeholder {_snippet(text, hit)!r} at character {hit}: {_HINT}")
        digits = m.group(1)
        if digits is not None and len(digits) > _MAX_DIGITS and not digits.startswith("-"):
            raise UsageError(f"{_snippet(text, hit)}... at character {hit} is longer than any model's context")
        n = 1 if digits is None else (-1 if digits.startswith("-") else int(digits))
        if n < 1:
            raise UsageError(f"{m.group(0)[:24]} at character {hit} asks for {digits} positions; "
                             f"a span needs at least 1")
        fixed = "".join(buf)
        if fixed:
            pieces.append(fixed)
        buf = []
        pieces.append(Span(n, hit, m.group(0)))
        pos = m.end()
    fixed = "".join(buf)
    if fixed:
        pieces.append(fixed)
    if not any(isinstance(p, Span) for p in pieces):
        raise UsageError(f"nothing to fill: the text has no [MASK] or [MASK:N] placeholder ({_HINT})")
    return pieces


def spans(pieces: Sequence[Piece]) -> list[Span]:
    return [p for p in pieces if isinstance(p, Span)]


def render(pieces: Sequence[Piece], fills: Sequence[str]) -> str:
    """The output text: fixed pieces verbatim, each span replaced by its fill, in order."""
    if len(fills) != len(spans(pieces)):
        raise ValueError(f"{len(fills)} fills for {len(spans(pieces))} spans")
    it = iter(fills)
    return "".join(p if isinstance(p, str) else next(it) for p in pieces)


def parse_force(spec: str) -> tuple[int, str]:
    """``POS:TEXT`` for ``--force``: a 0-based token offset in the generated region, then the text."""
    head, sep, body = spec.partition(":")
    if not sep or not re.fullmatch(r"\d{1,9}", head.strip()):
        raise UsageError(f"--force {spec!r}: expected POS:TEXT with POS a token offset from 0, e.g. --force 4:Paris")
    if body == "":
        raise UsageError(f"--force {spec!r}: the text after ':' is empty")
    return int(head), body


def _snippet(text: str, at: int) -> str:
    end = text.find("]", at)
    stop = min(len(text), at + 16) if end < 0 else min(end + 1, at + 16)
    return text[at:stop]
