"""Infill and --force end to end on random-weight GGUFs: the real runtime, the real CLI."""

from __future__ import annotations

import json
import types

import pytest

from dlmcli.cli import _warn_cut_forces
from dlmcli.engine.params import ALGORITHMS, SCHEDULES

from .conftest import run_dlm

TEMPLATE = "ab [MASK:3] cd [MASK] ef [MASK:2]"
PIECES = ["ab ", " cd ", " ef ", ""]
MASK = 3


def cid(c: str) -> int:
    return ord(c) - 23  # ggufgen's char vocab: ' ' is id 9, then printable ASCII in order



def check_filled(r, lengths=(3, 1, 2), pieces=PIECES):
    """Fixed text verbatim around each fill; each span exactly N tokens; no mask left; fixed tokens kept."""
    assert [sp.length for sp in r.spans] == list(lengths)
    assert all(len(sp.tokens) == sp.length for sp in r.spans)
    assert MASK not in r.tokens
    assert r.text == "".join(p + (sp.text if i < len(r.spans) else "")
                             for i, (p, sp) in enumerate(zip(pieces, list(r.spans) + [None])))
    for sp in r.spans:
        assert r.text[sp.offset:sp.offset + len(sp.text)] == sp.text
        assert r.tokens[sp.position:sp.position + sp.length] == sp.tokens
    for i, (before, after) in enumerate(zip(r.prompt_tokens, r.tokens)):
        assert before == MASK or before == after, f"fixed token at {i} changed"
    assert r.finish_reason == "filled"


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_every_schedule_and_algorithm_fills_every_span(request, arch, schedule, algorithm):
    m = request.getfixturevalue(arch)
    gen = m.infill(TEMPLATE, schedule=schedule, algorithm=algorithm, seed=5)
    initial = gen.initial_canvas.copy()
    steps = list(gen)
    r = gen.result()
    check_filled(r)
    assert r.steps == len(steps) == 6  # default: one pass per masked position
    for s in steps:  # fixed positions hold their tokens at every step
        keep = initial != MASK
        assert (s.canvas[keep] == initial[keep]).all()
    assert r.prompt_tokens == initial.tolist()


@pytest.mark.parametrize("extra", [
    dict(threshold=0.5), dict(factor=1.0), dict(cfg=1.0), dict(temperature=0.8, top_k=5, top_p=0.9),
    dict(alg_temp=0.5, algorithm="entropy"), dict(steps=2), dict(steps=12),
])
def test_other_knobs_still_fill_every_span(llada, extra):
    check_filled(llada.infill(TEMPLATE, seed=3, **extra).result())


def test_default_schedule_one_block_from_the_first_mask(llada):
    gen = llada.infill(TEMPLATE)
    first = gen.initial_canvas.tolist().index(MASK)
    assert gen.gen_start == first == 4  # BOS + "ab "
    p = gen.params
    assert (p.gen_length, p.block_length, p.steps) == (len(gen.initial_canvas) - first,) * 2 + (6,)
    assert gen.fixed == tuple(i for i, t in enumerate(gen.initial_canvas) if t != MASK and i > 0)


def test_block_length_leaves_a_shorter_last_block(llada):
    gen = llada.infill(TEMPLATE, block_length=4, seed=1)  # region of 13 -> blocks 4, 4, 4, 1
    steps = list(gen)
    assert gen.params.block_length == 4 and gen.params.steps == 8  # 6 masks round up to 2 per block
    assert max(s.block for s in steps) == 3 and steps[-1].block_end == len(gen.initial_canvas)
    check_filled(gen.result())


def test_fixed_text_is_kept_even_where_tokenizing_would_alter_it(llada):
    # U+2581 is the tokenizer's space escape: it tokenizes as a space, so detokenizing the canvas
    # would print " " instead; the output is built from the user's own string.
    text = "x\u2581y \\[MASK] é\t\\\\[MASK:2] z"
    r = llada.infill(text, seed=0).result()
    assert llada.detokenize(r.tokens[:3]) != "x\u2581y"
    check_filled(r, lengths=(2,), pieces=["x\u2581y [MASK] é\t\\", " z"])


def test_chat_puts_the_text_in_the_assistant_turn(llada):
    gen = llada.infill("[MASK:3]!", chat=True, user="hi", system="be brief")
    shown = b"".join(llada.runtime.piece(t, special=True) for t in gen.initial_canvas)
    assert shown == b"<|bos|><|system|>be brief<|end|><|user|>hi<|end|><|assistant|>" + b"<|mask|>" * 3 + b"!"
    check_filled(gen.result(), lengths=(3,), pieces=["", "!"])
    plain = llada.infill("[MASK:3]!")
    assert plain.initial_canvas.tolist() == [1, MASK, MASK, MASK, cid("!")]


def test_api_rejects_what_the_template_cannot_hold(llada):
    from dlmcli.errors import UsageError

    from dlmcli.errors import GenerationError

    with pytest.raises(GenerationError, match="context of 128"):  # as a too-long prompt in generate
        llada.infill("a [MASK:100] b [MASK:40]")
    with pytest.raises(UsageError, match="^gen_length does not apply"):  # the API names the parameter
        llada.infill("a [MASK]", gen_length=8)
    with pytest.raises(UsageError, match="add --chat"):
        llada.infill("a [MASK]", user="q")
    with pytest.raises(UsageError, match="^steps 5 does not split evenly over the 3 blocks"):
        llada.infill(TEMPLATE, block_length=5, steps=5)


def test_cli_infill_plain_json_and_stdin_agree(gguf_dir):
    base = ["infill", "-m", gguf_dir / "dream.gguf", "--seed", "4"]
    js = run_dlm(*base, "--json", TEMPLATE)
    plain = run_dlm(*base, input=(TEMPLATE + "\n").encode())
    assert js.returncode == plain.returncode == 0, js.stderr + plain.stderr
    obj = json.loads(js.stdout)
    assert set(obj) == {"model", "prompt_tokens", "tokens", "text", "steps", "finish_reason", "timings", "spans"}
    assert [s["length"] for s in obj["spans"]] == [3, 1, 2]
    assert set(obj["spans"][0]) == {"position", "length", "tokens", "text", "offset"}
    assert len(obj["tokens"]) == len(obj["prompt_tokens"]) and obj["finish_reason"] == "filled"
    assert plain.stdout.decode() == obj["text"] + "\n"
    assert obj["text"].startswith("ab ") and plain.stderr == b""


def test_cli_infill_with_the_live_view(gguf_dir):
    r = run_dlm("infill", "-m", gguf_dir / "llada.gguf", "--visual", "-s", "3", "[MASK:3] = x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().endswith(" = x\n") and b"3 steps" in r.stderr


def test_cli_infill_trace_marks_the_fixed_text(gguf_dir, tmp_path):
    path = tmp_path / "t.jsonl"
    r = run_dlm("infill", "-m", gguf_dir / "llada.gguf", "--trace", path, "a [MASK:2] b")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    header, end = lines[0], lines[-1]
    assert header["prompt_tokens"] == [1, cid("a"), cid(" "), MASK, MASK, cid(" "), cid("b")]
    assert header["gen_start"] == 3 and header["fixed"] == [1, 2, 5, 6]
    assert end["text"] + "\n" == r.stdout.decode() and end["finish_reason"] == "filled"
    replay = run_dlm("replay", path)
    assert replay.stdout == r.stdout


@pytest.mark.parametrize("text,needle", [
    ("x [MASK:0]", "at least 1"),
    ("x [MASK:-2]", "at least 1"),
    ("x [MASK:500]", "context of 128"),
    ("x [MASK:99999999999]", "longer than any model's context"),
    ("x [MASK:4", "bad placeholder"),
    ("x [MASK:four]", "bad placeholder"),
    ("plain text", "nothing to fill"),
])
def test_cli_bad_spans_one_error_line(gguf_dir, text, needle):
    r = run_dlm("infill", "-m", gguf_dir / "llada.gguf", text)
    assert r.returncode == (1 if needle == "context of 128" else 2), r.stderr  # 1: as generate's
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert r.stdout == b""


# --- generate --force --------------------------------------------------------------------------

def test_force_is_in_the_canvas_at_every_step(llada):
    gen = llada.denoise("abc", gen_length=16, block_length=8, force=[(2, "xyz"), (12, "Q")], seed=2)
    start = gen.gen_start
    ids = {start + 2: cid("x"), start + 3: cid("y"), start + 4: cid("z"), start + 12: cid("Q")}
    assert gen.fixed == tuple(sorted(ids))
    assert gen.forced == ((2, 5, "xyz"), (12, 13, "Q"))
    steps = list(gen)
    assert steps
    for s in steps:
        assert all(s.canvas[p] == t for p, t in ids.items())
    r = gen.result()
    if r.finish_reason == "length":
        assert r.text[2:5] == "xyz"


def test_force_with_every_schedule(llada, dream):
    for m in (llada, dream):
        for schedule in SCHEDULES:
            r = m.generate("q", gen_length=8, schedule=schedule, force=[(0, "ok")], seed=1)
            assert r.finish_reason == "eos" and len(r.tokens) < 2 or r.tokens[:2] == [cid("o"), cid("k")]


def test_cut_forces_warn():
    gen = types.SimpleNamespace(forced=((2, 5, "xyz"), (0, 1, "a")))
    import io
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        _warn_cut_forces(gen, types.SimpleNamespace(tokens=[7, 7, 7]))
    assert buf.getvalue() == "Warning: the answer ended at token 3, before --force 2:xyz\n"


def test_cli_force_json(gguf_dir):
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "-n", "8", "--json", "--force", "1:ab", "abc")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["finish_reason"] == "eos" or obj["tokens"][1:3] == [cid("a"), cid("b")]


@pytest.mark.parametrize("force,needle", [
    (["--force", "7:xy"], "does not fit"),
    (["--force", "8:x"], "does not fit"),
    (["--force", "1:abc", "--force", "3:z"], "overlaps --force 1:abc"),
    (["--force", "x"], "POS:TEXT"),
    (["--force", "2:"], "empty"),
])
def test_cli_bad_force_one_error_line(gguf_dir, force, needle):
    r = run_dlm("generate", "-m", gguf_dir / "llada.gguf", "-n", "8", *force, "abc")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --force") and needle in lines[0], lines


def test_block_schedule_on_a_timestep_family(dream):
    # Dream's family defaults have no block length; --schedule block used to raise KeyError.
    p = dream.params(schedule="block", gen_length=8)
    assert (p.schedule, p.block_length) == ("block", 8)
