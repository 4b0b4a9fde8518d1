"""The infill template parser and --force specs: pure functions, no model."""

from __future__ import annotations

import pytest

from dlmcli.errors import UsageError
from dlmcli.placeholders import Span, parse, parse_force, render, spans


def shape(pieces):
    return [p if isinstance(p, str) else p.length for p in pieces]


@pytest.mark.parametrize("text,want", [
    ("reverse hello = [MASK:5]", ["reverse hello = ", 5]),
    ("reverse [MASK:5] = olleh", ["reverse ", 5, " = olleh"]),
    ("[MASK]", [1]),
    ("[MASK:1]", [1]),
    ("[MASK:3][MASK:2]", [3, 2]),  # adjacent spans stay separate
    ("a[MASK]b[MASK:12]c", ["a", 1, "b", 12, "c"]),
    ("[MASK:007] x", [7, " x"]),
    ("  lead and trail  [MASK]  ", ["  lead and trail  ", 1, "  "]),
    ("é ünïcode 日本 [MASK:2] ✓", ["é ünïcode 日本 ", 2, " ✓"]),
    ("line1\n[MASK:2]\nline3\n", ["line1\n", 2, "\nline3\n"]),
    ("[mask:3] is literal, [MASK] is not", ["[mask:3] is literal, ", 1, " is not"]),
    ("MASK] [MAS [MASK:2]", ["MASK] [MAS ", 2]),
])
def test_splits_fixed_text_and_spans(text, want):
    assert shape(parse(text)) == want


def test_span_records_where_and_what():
    pieces = parse("ab [MASK:4] cd [MASK]")
    assert spans(pieces) == [Span(4, 3, "[MASK:4]"), Span(1, 15, "[MASK]")]


@pytest.mark.parametrize("text,want", [
    (r"\[MASK] [MASK]", ["[MASK] ", 1]),  # escaped placeholder is literal text
    (r"\[MASK:3] [MASK]", ["[MASK:3] ", 1]),
    (r"\[MASKED] [MASK]", ["[MASKED] ", 1]),  # escape also covers non-placeholders
    (r"\[MASK\[MASK [MASK]", ["[MASK[MASK ", 1]),
    ("\\\\[MASK:2]", ["\\", 2]),  # \\ before [MASK: one literal backslash, then a span
    ("\\\\\\[MASK] [MASK]", ["\\[MASK] ", 1]),  # \\\ : one backslash and a literal [MASK
    ("C:\\path\\file [MASK]", ["C:\\path\\file ", 1]),  # backslashes elsewhere are literal
    ("a\\\\b [MASK] \\n", ["a\\\\b ", 1, " \\n"]),
    ("[MASK]\\[MASK]", [1, "[MASK]"]),
    ("[MASK:2]\\\\[MASK]", [2, "\\", 1]),
])
def test_escapes(text, want):
    assert shape(parse(text)) == want


@pytest.mark.parametrize("text,needle", [
    ("[MASK:0] x", "at least 1"),
    ("[MASK:-3] x", "at least 1"),
    ("[MASK:-0]", "at least 1"),
    ("x [MASK:5", "bad placeholder '[MASK:5'"),
    ("x [MASK", "bad placeholder"),
    ("x [MASK:]", "bad placeholder"),
    ("x [MASK:a]", "bad placeholder"),
    ("x [MASK: 3]", "bad placeholder"),
    ("x [MASK:3 ]", "bad placeholder"),
    ("x [MASK:3.5]", "bad placeholder"),
    ("x [MASKED] [MASK]", "bad placeholder '[MASKED]'"),
    ("[MASK:12345678901]", "longer than any model's context"),
    ("no placeholder at all", "nothing to fill"),
    ("", "nothing to fill"),
    (r"only \[MASK] escaped", "nothing to fill"),
])
def test_bad_templates_raise_usage_errors(text, needle):
    with pytest.raises(UsageError) as e:
        parse(text)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_error_names_the_character_offset_and_the_escape():
    with pytest.raises(UsageError, match=r"at character 4: .*\\\[MASK for a literal"):
        parse("abc [MASK:x] def")


def test_render_keeps_fixed_text_verbatim():
    text = "  a\\[MASK] ü [MASK:3]\t[MASK]\n"
    pieces = parse(text)
    assert render(pieces, ["xyz", "!"]) == "  a[MASK] ü xyz\t!\n"
    with pytest.raises(ValueError):
        render(pieces, ["only one"])
    with pytest.raises(ValueError):
        render(pieces, ["a", "b", "c"])


def test_parse_then_render_with_placeholders_restores_an_unescaped_text():
    text = "x = [MASK:2], y = [MASK], z"
    pieces = parse(text)
    assert render(pieces, [s.source for s in spans(pieces)]) == text


@pytest.mark.parametrize("spec,want", [
    ("0:Paris", (0, "Paris")),
    ("12:a:b", (12, "a:b")),  # only the first colon splits
    (" 3: spaced ", (3, " spaced ")),
])
def test_force_specs(spec, want):
    assert parse_force(spec) == want


@pytest.mark.parametrize("spec", ["Paris", ":x", "-1:x", "a:x", "3:", "1.5:x"])
def test_bad_force_specs_name_the_flag(spec):
    with pytest.raises(UsageError, match="^--force"):
        parse_force(spec)
