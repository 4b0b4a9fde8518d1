"""The engine against the test-only restatement of LLaDA's and Dream's loops, step by step."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from dlmcli.engine.denoise import VocabInfo, denoise
from dlmcli.engine.params import GenerationParams
from dlmcli.engine.schedule import block_transfer_counts, threshold_count, timestep_transfer_count, timesteps
from dlmcli.errors import UsageError

from .reference_algorithms import dream_generate, dream_transfer_count, llada_generate, torch_linspace_f32

V = 40
MASK = 39
EOS = 38


class ScriptedModel:
    """Logits that depend on every token of the canvas, so each commit changes later steps."""

    def __init__(self, seed=0, scale=3.0):
        r = np.random.default_rng(seed)
        self.emb = r.normal(size=(V, V)).astype(np.float32) * scale
        self.pos = r.normal(size=(64, V)).astype(np.float32)
        self.mix = r.normal(size=(V, V)).astype(np.float32) * 0.3
        self.calls = 0

    def logits(self, x):
        x = np.asarray(x)
        ctx = self.emb[x].mean(axis=0) @ self.mix
        return (self.emb[x] + self.pos[: len(x)] + ctx).astype(np.float32)

    def __call__(self, canvases, windows=None):
        # The engine names the rows it reads; the reference algorithms read them all.
        self.calls += 1
        windows = windows or [(0, len(c)) for c in canvases]
        return [self.logits(c)[w0:w1] for c, (w0, w1) in zip(canvases, windows)]


def make_canvas(prompt_len=5, gen=12, seed=1):
    r = np.random.default_rng(seed)
    prompt = r.integers(0, 30, prompt_len)
    return np.concatenate([prompt, np.full(gen, MASK)]).astype(np.int32), prompt_len


def run_engine(params, canvas, gen_start, shift, model=None):
    model = model or ScriptedModel()
    vocab = VocabInfo(mask_id=MASK, shift=shift, eog_ids=frozenset({EOS}), fill_id=EOS)
    return [s.canvas.copy() for s in denoise(canvas, gen_start, params, model, vocab)]


LLADA_ALG = {"low-confidence": "low_confidence", "random": "random", "origin": "origin",
             "margin": "margin", "entropy": "entropy"}
DREAM_ALG = {"low-confidence": "maskgit_plus", "random": "random", "origin": "origin",
             "margin": "topk_margin", "entropy": "entropy"}


@pytest.mark.parametrize("algorithm,temperature,shift,cfg,alg_temp", [
    (a, t, sh, c, at) for a, t, sh, c, at in itertools.product(
        LLADA_ALG, [0.0, 0.7], [False, True], [0.0, 1.5], [0.0, 0.5])
    if not (at and a in ("origin",))
])
def test_block_schedule_matches_llada(algorithm, temperature, shift, cfg, alg_temp):
    canvas, gs = make_canvas(gen=12)
    params = GenerationParams(gen_length=12, steps=6, block_length=4, schedule="block", algorithm=algorithm,
                              temperature=temperature, cfg=cfg, alg_temp=alg_temp, seed=11).validate()
    got = run_engine(params, canvas, gs, shift)
    want = llada_generate(ScriptedModel(), canvas, gs, steps=6, block_length=4, mask_id=MASK,
                          temperature=temperature, cfg=cfg, remasking=LLADA_ALG[algorithm], shift=shift,
                          alg_temp=alg_temp, seed=11)
    assert len(got) == len(want) == 6
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"step {i}: {g} != {w}"
    assert not (got[-1] == MASK).any()


@pytest.mark.parametrize("algorithm,temperature,shift,cfg,alg_temp", [
    (a, t, sh, c, at) for a, t, sh, c, at in itertools.product(
        DREAM_ALG, [0.0, 0.5], [True, False], [0.0, 1.0], [0.0, 0.3])
    if not (at and a in ("origin",))
])
def test_timestep_schedule_matches_dream(algorithm, temperature, shift, cfg, alg_temp):
    canvas, gs = make_canvas(gen=10)
    params = GenerationParams(gen_length=10, steps=7, schedule="timestep", algorithm=algorithm, eps=1e-3,
                              temperature=temperature, cfg=cfg, alg_temp=alg_temp, seed=5).validate()
    got = run_engine(params, canvas, gs, shift)
    want = dream_generate(ScriptedModel(), canvas, gs, steps=7, mask_id=MASK, alg=DREAM_ALG[algorithm],
                          temperature=temperature, cfg=cfg, alg_temp=alg_temp, shift=shift, seed=5)
    assert len(got) == len(want) == 7
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"step {i}: {g} != {w}"
    assert not (got[-1] == MASK).any()


@pytest.mark.parametrize("schedule", ["block", "timestep"])
@pytest.mark.parametrize("top_k,top_p,temperature", [(5, 1.0, 0.0), (0, 0.6, 0.0), (4, 0.8, 0.9), (0, 0.9, 0.4)])
def test_top_k_top_p_match_reference(schedule, top_k, top_p, temperature):
    canvas, gs = make_canvas(gen=8)
    params = GenerationParams(gen_length=8, steps=8, block_length=4, schedule=schedule, algorithm="low-confidence",
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=3).validate()
    got = run_engine(params, canvas, gs, shift=schedule == "timestep")
    if schedule == "block":
        want = llada_generate(ScriptedModel(), canvas, gs, steps=8, block_length=4, mask_id=MASK,
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=3)
    else:
        want = dream_generate(ScriptedModel(), canvas, gs, steps=8, mask_id=MASK, temperature=temperature,
                              top_k=top_k, top_p=top_p, shift=True, seed=3)
    assert [g.tolist() for g in got] == [w.tolist() for w in want]


def test_seed_reproducible_and_different_seeds_differ():
    canvas, gs = make_canvas(gen=16)
    runs = {}
    for seed in (1, 1, 2):
        params = GenerationParams(gen_length=16, steps=16, block_length=8, temperature=1.5, seed=seed)
        runs.setdefault(seed, []).append(run_engine(params, canvas, gs, False, ScriptedModel(scale=0.3))[-1])
    assert np.array_equal(runs[1][0], runs[1][1])
    assert not np.array_equal(runs[1][0], runs[2][0])


def test_schedule_helpers():
    assert block_transfer_counts(10, 4) == [3, 3, 2, 2]
    assert block_transfer_counts(3, 5) == [1, 1, 1, 0, 0]
    ts = timesteps(4, 1e-3)
    assert ts.dtype == np.float32 and ts[0] == 1 and ts[-1] == np.float32(1e-3)
    assert timestep_transfer_count(100, 0, 4, ts) == int(np.float32(100) * (1 - ts[1] / ts[0]))
    assert timestep_transfer_count(7, 3, 4, ts) == 7
    assert threshold_count(np.array([0.99, 0.95, 0.5]), 0.9, None) == 2
    assert threshold_count(np.array([0.5, 0.4]), 0.9, None) == 1  # always at least the best
    # factor 1: n-th best needs conf >= 1 - 1/(n+1): 0.5, 0.667, 0.75, ...
    assert threshold_count(np.array([0.6, 0.7, 0.7, 0.1]), None, 1.0) == 2


def test_timesteps_are_torch_linspace_in_float32():
    # schedule.timesteps (float64 arithmetic rounded once) against the reference's exact rationals
    for steps in list(range(1, 70)) + [127, 128, 255, 256, 512, 1000]:
        for eps in (1e-3, 1e-2, 0.05, 0.1, 0.37):
            assert timesteps(steps, eps).tobytes() == torch_linspace_f32(1, eps, steps + 1).tobytes(), (steps, eps)


def test_transfer_counts_in_float32_like_dream():
    # 19 masks, 19 steps, eps 0.05: Dream reveals one token at step 1 (float32); float64 says none.
    ts = timesteps(19, 0.05)
    assert timestep_transfer_count(19, 1, 19, ts) == 1
    assert int(19 * (1 - np.linspace(1, 0.05, 20)[2] / np.linspace(1, 0.05, 20)[1])) == 0
    for steps in range(1, 120, 3):
        for eps in (1e-3, 0.01, 0.05):
            ts = timesteps(steps, eps)
            for masked in (1, 5, 19, 64, 100, 200):
                for i in range(steps - 1):
                    assert timestep_transfer_count(masked, i, steps, ts) == dream_transfer_count(masked, ts[i], ts[i + 1])


@pytest.mark.slow
def test_timesteps_and_counts_match_torch():
    torch = pytest.importorskip("torch")
    for steps in range(1, 201):
        for eps in (1e-3, 0.01, 0.05):
            want = torch.linspace(1, eps, steps + 1)
            ts = timesteps(steps, eps)
            assert ts.tobytes() == want.numpy().tobytes(), (steps, eps)
            masked = torch.tensor([3, 19, 77, 200])[:, None] / 1  # Dream: mask_index.sum() / batch, float32
            expect = (masked * (1 - want[1:-1] / want[:-2])).to(torch.int64).tolist()  # int() truncates
            got = [[timestep_transfer_count(m, i, steps, ts) for i in range(steps - 1)] for m in (3, 19, 77, 200)]
            assert got == expect, (steps, eps)


def test_prompt_is_never_touched_and_commits_are_final():
    canvas, gs = make_canvas(gen=12)
    params = GenerationParams(gen_length=12, steps=12, block_length=4, temperature=0.8, seed=4)
    history = run_engine(params, canvas, gs, False)
    for before, after in zip([canvas] + history, history):
        assert np.array_equal(after[:gs], canvas[:gs])
        kept = before != MASK
        assert np.array_equal(after[kept], before[kept])


@pytest.mark.parametrize("algorithm", list(LLADA_ALG))
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (0.8, 1.0), (0.5, 0.9)])
@pytest.mark.parametrize("schedule", ["block", "timestep"])
def test_a_model_that_predicts_the_mask_never_commits_it(schedule, temperature, top_p, algorithm):
    class LovesMask(ScriptedModel):
        def logits(self, x):
            out = super().logits(x)
            out[:, MASK] += 30.0  # the mask beats every real token everywhere
            return out

    canvas, gs = make_canvas(gen=8)
    params = GenerationParams(gen_length=8, steps=4, block_length=4, schedule=schedule, algorithm=algorithm,
                              temperature=temperature, top_p=top_p, seed=2).validate()
    history = run_engine(params, canvas, gs, False, LovesMask())
    assert len(history) == 4
    assert not (history[-1] == MASK).any()


def test_block_schedule_commits_inside_active_block_only():
    canvas, gs = make_canvas(gen=12)
    model = ScriptedModel()
    params = GenerationParams(gen_length=12, steps=6, block_length=4)
    vocab = VocabInfo(mask_id=MASK, shift=False)
    for step in denoise(canvas, gs, params, model, vocab):
        assert ((step.positions >= step.block_start) & (step.positions < step.block_end)).all()
        assert step.block_start == gs + 4 * step.block
        assert step.n_blocks == 3


def test_the_schedule_object_is_the_split_the_engine_runs():
    from dlmcli.engine.schedule import Schedule

    plan = Schedule.plan("block", 9, 9, 4)  # an infill's 9 positions in blocks of 4
    assert (plan.n_blocks, plan.sizes(), plan.bounds(2), plan.steps_per_block) == (3, (4, 4, 1), (8, 9), 3)
    assert plan.block_commits(4) == block_transfer_counts(4, 3)
    # The engine runs exactly that split (an infill-like canvas: the region is all masks).
    canvas, gs = make_canvas(gen=9)
    params = GenerationParams(gen_length=9, steps=9, block_length=4)  # the engine splits the canvas it is given
    seen = {s.block: (s.block_start - gs, s.block_end - gs) for s in denoise(canvas, gs, params, ScriptedModel(),
                                                                               VocabInfo(mask_id=MASK, shift=False))}
    assert seen == {b: plan.bounds(b) for b in range(plan.n_blocks)}
    t = Schedule.plan("timestep", 9, 5)
    assert (t.n_blocks, t.sizes(), t.timestep_commits(9, 4)) == (1, (9,), 9)
    assert t.timesteps.tobytes() == timesteps(5, 1e-3).tobytes()
    with pytest.raises(UsageError, match="does not split evenly over 3 blocks"):
        Schedule.of(dataclasses.replace(params, steps=8), 9)
    # A view's copy from recorded parameters never raises, whatever a trace holds.
    assert Schedule.from_dict({"schedule": "block", "steps": "x"}, 5).sizes() == (5,)
    assert Schedule.from_dict({}, 0).sizes() == (0,)


def test_threshold_decoding_uses_fewer_passes_and_fills_everything():
    canvas, gs = make_canvas(gen=16)
    model = ScriptedModel(scale=6.0)
    base = GenerationParams(gen_length=16, steps=16, block_length=8)
    vocab = VocabInfo(mask_id=MASK, shift=False)
    full = list(denoise(canvas, gs, base, ScriptedModel(scale=6.0), vocab))
    fast = list(denoise(canvas, gs, GenerationParams(gen_length=16, steps=16, block_length=8, threshold=0.5),
                        model, vocab))
    assert len(full) == 16
    assert len(fast) < 16
    assert not (fast[-1].canvas == MASK).any()
    assert all(s.positions.size >= 1 for s in fast)


def test_early_stop_is_lossless_for_the_trimmed_answer():
    class EosAfter3(ScriptedModel):
        def logits(self, x):
            out = super().logits(x)
            out[8:, EOS] += 50.0  # positions from 8 on are confidently EOS
            return out

    canvas, gs = make_canvas(prompt_len=5, gen=16)
    vocab = VocabInfo(mask_id=MASK, shift=False, eog_ids=frozenset({EOS}), fill_id=EOS)
    slow = list(denoise(canvas, gs, GenerationParams(gen_length=16, steps=16, block_length=4), EosAfter3(), vocab))
    fast = list(denoise(canvas, gs, GenerationParams(gen_length=16, steps=16, block_length=4, early_stop=True),
                        EosAfter3(), vocab))
    assert len(fast) < len(slow) == 16

    def trim(c):
        gen = list(c[gs:])
        return gen[: gen.index(EOS)] if EOS in gen else gen

    assert trim(fast[-1].canvas) == trim(slow[-1].canvas)
    assert not (fast[-1].canvas == MASK).any()


def test_early_stop_fires_on_any_end_of_generation_token():
    # A chat model ends a turn with EoT, not EOS: the answer settles at the first of either.
    EOT = 37

    class EotAfter8(ScriptedModel):
        def logits(self, x):
            out = super().logits(x)
            out[8:, EOT] += 50.0
            return out

    canvas, gs = make_canvas(prompt_len=5, gen=16)
    kw = dict(gen_length=16, steps=16, block_length=4)
    slow = list(denoise(canvas, gs, GenerationParams(**kw), EotAfter8(),
                        VocabInfo(mask_id=MASK, shift=False, eog_ids=frozenset({EOS, EOT}), fill_id=EOS)))

    def trim(c):
        gen = list(c[gs:])
        return gen[: gen.index(EOT)] if EOT in gen else gen

    for eog, stops in ((frozenset({EOS}), False), (frozenset({EOS, EOT}), True)):
        vocab = VocabInfo(mask_id=MASK, shift=False, eog_ids=eog, fill_id=EOS)
        fast = list(denoise(canvas, gs, GenerationParams(**kw, early_stop=True), EotAfter8(), vocab))
        assert (len(fast) < len(slow) == 16) == stops, eog
        assert not (fast[-1].canvas == MASK).any()
        assert trim(fast[-1].canvas) == trim(slow[-1].canvas)


def test_batch_matches_single_runs():
    from dlmcli.engine.denoise import denoise_batch

    c1, g1 = make_canvas(prompt_len=4, gen=8, seed=1)
    c2, g2 = make_canvas(prompt_len=7, gen=8, seed=2)
    params = GenerationParams(gen_length=8, steps=8, block_length=4, seed=9)
    vocab = VocabInfo(mask_id=MASK, shift=False)
    batched = list(denoise_batch([c1, c2], [g1, g2], params, ScriptedModel(), vocab))
    assert len(batched) == 8
    single1 = list(denoise(c1, g1, params, ScriptedModel(), vocab))
    assert np.array_equal(batched[-1][0].canvas, single1[-1].canvas)


@pytest.mark.parametrize("kwargs,flag", [
    (dict(gen_length=0), "--gen-length"), (dict(steps=0), "--steps"), (dict(steps=-3), "--steps"),
    (dict(top_p=0.0), "--top-p"), (dict(top_p=1.5), "--top-p"), (dict(temperature=-1), "--temperature"),
    (dict(gen_length=100, block_length=32), "--block-length"), (dict(gen_length=64, steps=63), "--steps"),
    (dict(top_k=-1), "--top-k"), (dict(eps=0), "--eps"), (dict(schedule="zig"), "--schedule"),
    (dict(algorithm="best"), "--algorithm"), (dict(threshold=1.5), "--threshold"),
    (dict(temperature=float("nan")), "--temperature"),
    (dict(threshold=0.9, algorithm="entropy"), "--threshold"), (dict(factor=1.0, algorithm="origin"), "--factor"),
])
def test_validation_names_the_parameter_and_the_cli_the_flag(kwargs, flag):
    with pytest.raises(UsageError) as e:
        GenerationParams(**kwargs).validate()
    name = flag[2:].replace("-", "_")
    assert name in str(e.value) and "--" not in str(e.value)
    assert flag in e.value.cli_message()


def test_steps_beyond_the_length_are_skipped_by_early_stop_only():
    # Block schedule: once a block has no mask left, its remaining passes could change nothing.
    # (Dream's timestep schedule keeps masks until its last steps, so nothing is skipped there.)
    canvas, gs = make_canvas(gen=4)
    vocab = VocabInfo(mask_id=MASK, shift=False)  # no end-of-generation token: only empty passes can go
    kw = dict(gen_length=4, steps=40, block_length=2, schedule="block", seed=1)
    full = list(denoise(canvas, gs, GenerationParams(**kw).validate(), ScriptedModel(), vocab))
    short = list(denoise(canvas, gs, GenerationParams(**kw, early_stop=True).validate(), ScriptedModel(), vocab))
    assert len(full) == 40  # what was asked, faithfully
    assert len(short) <= 4 < len(full)
    assert np.array_equal(short[-1].canvas, full[-1].canvas)  # skipped passes could change nothing
