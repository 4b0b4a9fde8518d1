"""The step-wise scheduler: sequences with their own settings join and leave a shared pass, and
each one's steps are exactly what it would get alone."""

from __future__ import annotations

import numpy as np
import pytest

from dlmcli.engine.denoise import Scheduler, VocabInfo, denoise
from dlmcli.engine.params import GenerationParams
from dlmcli.errors import UsageError

from .test_engine import EOS, MASK, ScriptedModel, make_canvas

VOCAB = VocabInfo(mask_id=MASK, shift=False, eog_ids=frozenset({EOS}), fill_id=EOS)

# Different lengths, schedules, algorithms, sampling and guidance, all in one pass.
MIXED = [
    (GenerationParams(gen_length=12, steps=12, block_length=4, seed=1), 5),
    (GenerationParams(gen_length=8, steps=4, schedule="timestep", algorithm="entropy", temperature=0.7,
                      top_p=0.9, seed=2), 3),
    (GenerationParams(gen_length=16, steps=8, block_length=8, cfg=1.5, seed=3), 7),
    (GenerationParams(gen_length=10, steps=10, block_length=10, threshold=0.3, early_stop=True, seed=4), 4),
    (GenerationParams(gen_length=6, steps=3, block_length=2, algorithm="margin", temperature=1.0, seed=5), 2),
]


def alone(params, prompt_len, canvas_seed):
    canvas, gs = make_canvas(prompt_len, params.gen_length, canvas_seed)
    return [(s.index, s.canvas.tolist(), s.positions.tolist(), s.masks_left)
            for s in denoise(canvas, gs, params.validate(), ScriptedModel(), VOCAB)]


def test_mixed_batch_equals_each_alone():
    want = [alone(p, n, i) for i, (p, n) in enumerate(MIXED)]
    model = ScriptedModel()
    sched = Scheduler(model, VOCAB)
    for i, (p, n) in enumerate(MIXED):
        canvas, gs = make_canvas(n, p.gen_length, i)
        sched.add(canvas, gs, p.validate(), seq_id=10 + i)
    got = {10 + i: [] for i in range(len(MIXED))}
    sizes = []
    while len(sched):
        steps = sched.step()
        assert not sched.failures
        sizes.append(len(steps))
        for s in steps:
            assert s.batch == len(steps)
            got[s.seq].append((s.index, s.canvas.tolist(), s.positions.tolist(), s.masks_left))
    assert [got[10 + i] for i in range(len(MIXED))] == want
    assert model.calls == len(sizes) == max(len(w) for w in want)
    assert sizes[0] == len(MIXED) and sizes[-1] < len(MIXED)  # finished sequences left the pass


def test_joining_late_and_leaving_early():
    p_a, p_b = (GenerationParams(gen_length=12, steps=12, block_length=4, seed=7).validate(),
                GenerationParams(gen_length=8, steps=8, schedule="timestep", temperature=0.5, seed=8).validate())
    want_b = alone(p_b, 3, 1)
    sched = Scheduler(ScriptedModel(), VOCAB)
    ca, ga = make_canvas(5, 12, 0)
    a = sched.add(ca, ga, p_a)
    for _ in range(3):
        sched.step()
    cb, gb = make_canvas(3, 8, 1)
    b = sched.add(cb, gb, p_b)
    assert sched.ids == [a, b] and a != b
    got_b = []
    for _ in range(2):
        for s in sched.step():
            if s.seq == b:
                got_b.append((s.index, s.canvas.tolist(), s.positions.tolist(), s.masks_left))
    sched.remove(a)  # a client went away: a is not in the next pass
    while len(sched):
        steps = sched.step()
        assert [s.seq for s in steps] == [b]
        got_b += [(s.index, s.canvas.tolist(), s.positions.tolist(), s.masks_left) for s in steps]
    assert got_b == want_b
    sched.remove(a)  # removing twice, or a finished id, is harmless
    assert sched.step() == []


def test_seed_index_picks_the_child_stream():
    """--batch's sequence i draws from child i of the seed, whatever batch it runs in."""
    p = GenerationParams(gen_length=8, steps=8, schedule="timestep", temperature=1.0, seed=3).validate()
    canvas, gs = make_canvas(4, 8, 0)
    runs = []
    for others in (0, 2):
        sched = Scheduler(ScriptedModel(), VOCAB)
        for j in range(others):
            sched.add(canvas, gs, p, seed_index=j)
        target = sched.add(canvas, gs, p, seed_index=5)
        final = None
        while len(sched):
            for s in sched.step():
                if s.seq == target:
                    final = s.canvas.tolist()
        runs.append(final)
    assert runs[0] == runs[1]


def test_a_failing_sequence_leaves_alone():
    class NanFor:
        def __init__(self, bad_len):
            self.inner, self.bad_len = ScriptedModel(), bad_len

        def __call__(self, canvases, windows):
            out = self.inner(canvases, windows)
            return [np.full_like(x, np.nan) if len(c) == self.bad_len else x for c, x in zip(canvases, out)]

    p = GenerationParams(gen_length=8, steps=8, block_length=8, seed=1).validate()
    sched = Scheduler(NanFor(13), VOCAB)
    good_canvas, gs = make_canvas(4, 8, 0)
    bad_canvas, gs_bad = make_canvas(5, 8, 1)
    good = sched.add(good_canvas, gs, p)
    bad = sched.add(bad_canvas, gs_bad, p)
    steps = sched.step()
    assert [s.seq for s in steps] == [good]
    assert [i for i, _ in sched.failures] == [bad] and "NaN" in str(sched.failures[0][1])
    assert sched.ids == [good]


def test_add_refuses_a_bad_split_naming_the_parameter():
    sched = Scheduler(ScriptedModel(), VOCAB)
    canvas, gs = make_canvas(4, 8, 0)
    p = GenerationParams(gen_length=8, steps=3, block_length=4)  # not validated: the scheduler checks
    with pytest.raises(UsageError) as e:
        sched.add(canvas, gs, p)
    assert e.value.param == "steps"
    assert str(e.value).startswith("steps 3 ") and e.value.cli_message().startswith("--steps 3 ")
