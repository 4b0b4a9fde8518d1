"""Infill accuracy with the bundled trained tiny LLaDA: `reverse WORD = DROW` both ways.

Words are fresh random draws; the seed is printed in every failure (rerun one with DLM_TEST_SEED=N).
The sample runs in one process through the API (the same call the CLI makes); a few words also go
through the real CLI, which must print exactly what the API returned.
"""

from __future__ import annotations

import json
import os
import random
import secrets

import pytest

from dlmcli.hub import BUNDLED_DIR

from .conftest import run_dlm

MODEL = BUNDLED_DIR / "tiny-llada.gguf"
N_WORDS = 30
MIN_ACCURACY = 0.9
CLI_RUNS = 2  # per direction

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"the bundled tiny model is absent ({MODEL})")


@pytest.fixture(scope="module")
def seed() -> int:
    return int(os.environ.get("DLM_TEST_SEED") or secrets.randbits(32))


@pytest.fixture(scope="module")
def words(seed) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
            for _ in range(N_WORDS)]


@pytest.fixture(scope="module")
def model():
    from dlmcli.api import load

    with load("tiny-llada") as m:
        yield m


DIRECTIONS = {
    "answer": lambda w: (f"reverse {w} = [MASK:{len(w)}]", f"reverse {w} = {w[::-1]}"),
    "word": lambda w: (f"reverse [MASK:{len(w)}] = {w[::-1]}", f"reverse {w} = {w[::-1]}"),
}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.slow
def test_reverse_infill_accuracy(model, words, seed, direction):
    misses, outputs = [], {}
    for w in words:
        template, want = DIRECTIONS[direction](w)
        got = model.infill(template).result().text
        outputs[w] = got
        fixed_before, _, fixed_after = template.partition(f"[MASK:{len(w)}]")
        assert got.startswith(fixed_before) and got.endswith(fixed_after), \
            f"fixed text altered: {template!r} -> {got!r} (seed {seed})"
        if got != want:
            misses.append(f"{template!r} -> {got!r}")
    accuracy = 1 - len(misses) / len(words)
    print(f"infill {direction}: {accuracy:.0%} of {len(words)} (seed {seed})")
    assert accuracy >= MIN_ACCURACY, (f"{direction}: {accuracy:.0%} exact, below {MIN_ACCURACY:.0%} "
                                      f"(seed {seed}; rerun with DLM_TEST_SEED={seed}); misses: {misses}")

    for w in words[:CLI_RUNS]:  # the real CLI prints what the API returned
        template, _ = DIRECTIONS[direction](w)
        r = run_dlm("infill", "-m", "tiny-llada", template)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode() == outputs[w] + "\n", f"CLI and API differ for {template!r} (seed {seed})"


def test_the_issue_examples_through_the_cli():
    for template in ("reverse hello = [MASK:5]", "reverse [MASK:5] = olleh"):
        r = run_dlm("infill", "-m", "tiny-llada", template)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"reverse hello = olleh\n"


def test_force_pins_text_in_the_answer(model):
    for force in ([(0, "o")], [(2, "X")], [(5, "!!")]):
        r = model.generate("reverse hello", force=force)
        (pos, text), = force
        assert r.text[pos:pos + len(text)] == text, (force, r.text)


def test_an_answer_ending_before_a_forced_text_warns():
    r = run_dlm("generate", "-m", "tiny-llada", "--json", "--force", "12:abc", "reverse hello")
    assert r.returncode == 0, r.stderr
    n = len(json.loads(r.stdout)["tokens"])
    warning = f"Warning: the answer ended at token {n}, before --force 12:abc\n".encode()
    assert (r.stderr == warning) if n < 15 else (r.stderr == b"")
