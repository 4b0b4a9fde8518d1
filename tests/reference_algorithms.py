"""Test-only restatement of the authors' loops, written the way their code reads.

LLaDA ``generate()`` (block schedule) and Dream ``diffusion_generate()`` (timestep schedule),
re-expressed in numpy over a whole-canvas logits array. It consumes randomness in the order the
engine documents (per sequence and step: for 'origin', uniforms [n_candidates] for the reveals
first, then the token draws for the revealed rows only, as Dream's code does; otherwise uniforms
[n_candidates] for the token draws when temperature > 0, then [n] for 'random' confidence, then
[n] for alg_temp), so runs with temperature can be compared too. A token is drawn from the authors'
distribution (softmax of the filtered logits / T) by inverse CDF in vocabulary order, one uniform
per candidate: the same distribution as LLaDA's Gumbel-max and Dream's multinomial, not their
random streams. It returns the canvas after every forward pass.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

EPS_LOG = 1e-10


def _f32(value: Fraction) -> np.float32:
    """The float32 nearest to an exact rational (ties to even): one rounding, as a fused multiply-add."""
    near = np.float32(float(value))
    candidates = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - value), int(np.float32(c).view(np.int32)) & 1))


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps) in float32 as torch's kernels compute it: step in float32, the
    first half start + step * i and the second half end - step * (steps - 1 - i), each one FMA."""
    a, b = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([a], np.float32)
    step = np.float32((b - a) / np.float32(steps - 1))
    out = [_f32(Fraction(float(a)) + Fraction(float(step)) * i) if i < steps // 2
           else _f32(Fraction(float(b)) - Fraction(float(step)) * (steps - 1 - i)) for i in range(steps)]
    return np.array(out, np.float32)


def dream_transfer_count(num_mask: int, t: np.float32, s: np.float32) -> int:
    """Dream's ``int(num_mask_token * (1 - s / t))`` on float32 tensors: one rounding per operation."""
    return int(np.float32(num_mask) * (np.float32(1) - np.float32(s) / np.float32(t)))


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _draw(probs, u):
    """Inverse CDF per row: the first token whose cumulative probability exceeds u."""
    out = np.empty(probs.shape[0], np.int64)
    for r in range(probs.shape[0]):
        cum = np.cumsum(probs[r])
        out[r] = min(int(np.searchsorted(cum, u[r] * cum[-1], side="right")), probs.shape[1] - 1)
    return out


def _top_p(z, top_p):
    out = z.copy()
    for r in range(z.shape[0]):
        order = np.argsort(-z[r], kind="stable")
        probs = _softmax(z[r][order])
        cum = np.cumsum(probs)
        remove = cum > top_p
        remove[1:] = remove[:-1].copy()
        remove[0] = False
        out[r, order[remove]] = -np.inf
    return out


def _top_k(z, k):
    out = z.copy()
    for r in range(z.shape[0]):
        kth = np.sort(z[r])[::-1][k - 1]
        out[r, z[r] < kth] = -np.inf
    return out


def _model_logits(forward, x, prompt_index, mask_id, cfg, shift):
    if cfg > 0:
        un_x = x.copy()
        un_x[prompt_index] = mask_id
        cond, uncond = forward([x, un_x])
        cond = np.asarray(cond, np.float32)
        uncond = np.asarray(uncond, np.float32)
        logits = uncond + np.float32(cfg + 1) * (cond - uncond)
    else:
        logits = np.asarray(forward([x])[0], np.float32)
    if shift:
        logits = np.concatenate([logits[:1], logits[:-1]], axis=0)
    return logits.astype(np.float64)


def _select(conf, k, alg_temp, rng):
    if alg_temp > 0:
        keys = conf / alg_temp - np.log(-np.log(rng.random(conf.size)))
    else:
        keys = conf
    return np.argsort(-keys, kind="stable")[:k]


def llada_generate(forward, canvas, gen_start, *, steps, block_length, mask_id, temperature=0.0,
                   cfg=0.0, remasking="low_confidence", shift=False, alg_temp=0.0, top_k=0, top_p=1.0,
                   seed=0):
    """LLaDA's semi-autoregressive loop, generalised to the algorithms dlm offers."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    x = np.array(canvas, dtype=np.int64)
    prompt_index = x != mask_id
    gen_length = len(x) - gen_start
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    history = []
    for b in range(num_blocks):
        bs, be = gen_start + b * block_length, gen_start + (b + 1) * block_length
        mask_num = int((x[bs:be] == mask_id).sum())
        base, rem = divmod(mask_num, steps_per_block)
        counts = [base + (1 if i < rem else 0) for i in range(steps_per_block)]
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = _model_logits(forward, x, prompt_index, mask_id, cfg, shift)
            cand = np.flatnonzero(mask_index[:be])
            k = counts[i]
            if cand.size == 0 or (k == 0 and remasking != "origin"):
                history.append(x.copy())
                continue
            if remasking == "origin":  # the reveals first, then tokens for the revealed rows only (as Dream)
                prob = 1.0 if i == steps_per_block - 1 else k / cand.size
                cand = cand[rng.random(cand.size) < prob]
            z = logits[cand] / temperature if temperature > 0 else logits[cand].copy()
            if 0 < top_p < 1:
                z = _top_p(z, top_p)
            if top_k > 0:
                z = _top_k(z, top_k)
            if temperature > 0:
                # LLaDA add_gumbel_noise samples softmax(filtered logits / T); drawn here by inverse CDF
                x0 = _draw(_softmax(z), rng.random(cand.size))
            else:
                x0 = np.argmax(z, axis=-1)
            p = _softmax(logits[cand])  # LLaDA: confidence from the plain softmax of the logits
            if remasking in ("low_confidence", "origin"):
                conf = p[np.arange(cand.size), x0]
            elif remasking == "margin":
                s = np.sort(p, axis=-1)
                conf = s[:, -1] - s[:, -2]
            elif remasking == "entropy":
                conf = (p * np.log(p + EPS_LOG)).sum(-1)
            if remasking == "random":
                conf = rng.random(cand.size)
            if remasking == "origin":
                sel = np.arange(cand.size)
            else:
                sel = _select(conf, min(k, cand.size), alg_temp, rng)
            x[cand[sel]] = x0[sel]
            history.append(x.copy())
    return history


def dream_generate(forward, canvas, gen_start, *, steps, mask_id, eps=1e-3, alg="maskgit_plus",
                   temperature=0.0, top_p=None, top_k=None, alg_temp=None, cfg=0.0, shift=True, seed=0):
    """Dream's timestep loop."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    x = np.array(canvas, dtype=np.int64)
    prompt_index = x != mask_id
    timesteps = torch_linspace_f32(1, eps, steps + 1)
    history = []
    for i in range(steps):
        mask_index = x == mask_id
        logits = _model_logits(forward, x, prompt_index, mask_id, cfg, shift)
        cand = np.flatnonzero(mask_index)
        if cand.size == 0:
            history.append(x.copy())
            continue
        t, s = timesteps[i], timesteps[i + 1]
        num_mask = cand.size
        k = dream_transfer_count(num_mask, t, s) if i < steps - 1 else num_mask
        if k == 0 and alg != "origin":
            history.append(x.copy())
            continue
        if alg == "origin":  # Dream: transfer_index_t_s first, then sample_tokens on those rows only
            p_transfer = 1 - s / t if i < steps - 1 else 1
            cand = cand[rng.random(cand.size) < p_transfer]
        z = logits[cand]
        if temperature > 0:
            z = z / temperature
        if top_p is not None and top_p < 1:
            z = _top_p(z, top_p)
        if top_k is not None and top_k > 0:
            z = _top_k(z, top_k)
        probs = _softmax(z)
        if temperature > 0:
            x0 = _draw(probs, rng.random(cand.size))  # a draw from Categorical(probs)
        else:
            x0 = np.argmax(probs, axis=-1)
        conf = probs[np.arange(cand.size), x0]
        if alg == "topk_margin":
            srt = np.sort(probs, axis=-1)
            conf = srt[:, -1] - srt[:, -2]
        elif alg == "entropy":
            conf = (probs * np.log(probs + EPS_LOG)).sum(-1)
        if alg == "random":
            conf = rng.random(cand.size)
        if alg == "origin":
            sel = np.arange(cand.size)
        else:
            sel = _select(conf, k, alg_temp or 0.0, rng)
        x[cand[sel]] = x0[sel]
        history.append(x.copy())
    return history
