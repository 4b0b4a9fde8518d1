"""The denoising loop: pure numpy, blind to llama.cpp and to the terminal.

``denoise_batch`` drives any number of canvases through one shared forward function and yields,
per forward pass, one ``Step`` per sequence that took part. ``denoise`` is the one-sequence case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import numpy.random  # noqa: F401  (numpy loads it lazily; a Ctrl-C inside that import mid-run got lost)

from ..errors import GenerationError, UsageError
from .events import Step
from .params import GenerationParams
from .schedule import block_transfer_counts, threshold_count, timestep_transfer_count, timesteps
from .scoring import Rows, sample

# forward(canvases) -> logits per canvas, each float32 [len(canvas), vocab]; may be views that
# the next call overwrites.
Forward = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class VocabInfo:
    """What the engine needs to know about the model: its vocabulary, and how many CPU threads may
    score its rows (the model's runtime decides; a per-model value, so two models in one process can differ)."""

    mask_id: int
    shift: bool  # position i is predicted by the output at i-1 (Dream, RND1)
    eog_ids: frozenset = frozenset()  # end-of-generation tokens (EOS, EoT, ...)
    fill_id: int | None = None  # token that pads an answer after early stop (EOS)
    threads: int = 1  # scoring threads (OpenMP threads of the C kernel)


@dataclass
class _Seq:
    canvas: np.ndarray
    gen_start: int
    uncond_mask: np.ndarray  # positions blanked in CFG's unconditional pass (initially non-mask)
    rng: np.random.Generator
    index: int
    block: int = 0
    step_in_block: int = 0
    counts: list = field(default_factory=list)
    finished: bool = False


def denoise(canvas: np.ndarray, gen_start: int, params: GenerationParams, forward: Forward,
            vocab: VocabInfo, *, trim_at_eog: bool = True) -> Iterator[Step]:
    """Denoise one canvas; yields a Step per forward pass."""
    for steps in denoise_batch([canvas], [gen_start], params, forward, vocab, trim_at_eog=trim_at_eog):
        yield steps[0]


def denoise_batch(canvases: Sequence[np.ndarray], gen_starts: Sequence[int], params: GenerationParams,
                  forward: Forward, vocab: VocabInfo, *, trim_at_eog: bool = True,
                  first_index: int = 0) -> Iterator[list[Step]]:
    """Denoise several canvases in lock-step, one forward pass for all of them per step.

    ``trim_at_eog``: the answer ends at its first end-of-generation token, so once every position
    before that token is committed the answer cannot change; with ``params.early_stop`` the rest
    is filled with ``vocab.fill_id`` and no more passes are spent on it.
    ``first_index``: index of the first canvas in a longer list split into batches; sequence i
    draws from the i-th child of the seed, so its randomness does not depend on the batch size.
    """
    p = params
    seeds = np.random.SeedSequence(p.seed).spawn(first_index + len(canvases))[first_index:]
    seqs = []
    for canvas, gen_start, ss in zip(canvases, gen_starts, seeds):
        c = np.array(canvas, dtype=np.int32)
        region = len(c) - gen_start
        if region <= 0:
            raise UsageError("nothing to generate: the canvas has no positions after the prompt")
        seqs.append(_Seq(c, gen_start, c != vocab.mask_id, np.random.default_rng(ss), first_index + len(seqs)))

    region = len(seqs[0].canvas) - seqs[0].gen_start
    if p.schedule == "block":
        block_length = min(p.block_length, region)
        n_blocks = -(-region // block_length)
        if p.steps % n_blocks:
            raise UsageError(f"--steps {p.steps} does not split evenly over {n_blocks} blocks")
        steps_per_block = p.steps // n_blocks
    else:
        block_length, n_blocks, steps_per_block = region, 1, p.steps
    ts = timesteps(p.steps, p.eps)
    convention = "raw" if p.schedule == "block" else "sampled"
    dynamic = p.threshold is not None or p.factor is not None

    for s in seqs:
        _start_block(s, block_length, steps_per_block, vocab.mask_id, p.schedule)

    pass_index = 0
    while True:
        active = [s for s in seqs if not s.finished]
        if not active:
            return
        batch = [s.canvas for s in active]
        if p.cfg > 0:
            batch += [np.where(s.uncond_mask, vocab.mask_id, s.canvas).astype(np.int32) for s in active]
        t0 = time.perf_counter()
        logits = forward(batch)
        forward_s = time.perf_counter() - t0

        out = []
        for i, s in enumerate(active):
            t1 = time.perf_counter()
            b_start = s.gen_start + s.block * block_length
            b_end = min(b_start + block_length, len(s.canvas))
            masked = np.flatnonzero(s.canvas[:b_end] == vocab.mask_id)
            rows_idx = np.maximum(masked - 1, 0) if vocab.shift else masked
            # Only the competing rows are read, in place: no copy of the logits.
            rows = Rows(logits[i], rows_idx, logits[i + len(active)] if p.cfg > 0 else None, p.cfg + 1.0)

            if p.schedule == "block":
                k = s.counts[s.step_in_block] if s.step_in_block < len(s.counts) else 0
                last = s.step_in_block == steps_per_block - 1
                reveal_p = 1.0 if last or masked.size == 0 else k / masked.size
            else:
                step_no = s.step_in_block
                k = timestep_transfer_count(masked.size, step_no, p.steps, ts)
                last = step_no == p.steps - 1
                reveal_p = 1.0 if last else 1.0 - ts[step_no + 1] / ts[step_no]

            chosen, tok, conf = _choose(rows, masked, k, reveal_p, p, convention, dynamic, s.rng, vocab.mask_id,
                                        vocab.threads)
            s.canvas[chosen] = tok
            s.step_in_block += 1
            block_now = s.block
            filled = _advance(s, p, block_length, n_blocks, steps_per_block, vocab, trim_at_eog, dynamic)
            if filled.size:
                chosen = np.concatenate([chosen, filled])
                tok = np.concatenate([tok, s.canvas[filled]])
                conf = np.concatenate([conf, np.full(filled.size, np.nan)])
            canvas_view = s.canvas.copy()
            canvas_view.setflags(write=False)
            out.append(Step(
                index=pass_index, steps=p.steps, block=block_now, n_blocks=n_blocks, block_start=b_start,
                block_end=b_end, gen_start=s.gen_start, canvas=canvas_view, positions=chosen, tokens=tok,
                confidences=conf,
                masks_left=int(np.count_nonzero(s.canvas[s.gen_start:] == vocab.mask_id)),
                forward_s=forward_s, sampling_s=time.perf_counter() - t1, seq=s.index,
            ))
        pass_index += 1
        yield out


def _choose(rows, masked, k, reveal_p, p: GenerationParams, convention, dynamic, rng, mask_id, threads=1):
    """Pick positions to commit; returns (positions, tokens, confidences)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0))
    if masked.size == 0 or (k == 0 and not dynamic and p.algorithm != "origin"):
        return empty
    idx, conf = sample(rows, p.algorithm, p.temperature, p.top_k, p.top_p, convention, rng, threads)
    if np.isnan(conf).any():  # O(n): a NaN or infinite logit makes its row's confidence NaN
        raise GenerationError("the model produced NaN or infinite logits; its weights are probably corrupt "
                              "(try another copy or quant of the model)")
    picked_mask = idx == mask_id
    if picked_mask.any():
        # The authors' code would commit the mask itself (a trained model never predicts it; a random
        # or broken one can). Only those rows are redrawn without it, so every other run is unchanged.
        again = Rows.of(rows).subset(picked_mask).array()
        again[:, mask_id] = -np.inf
        idx[picked_mask], conf[picked_mask] = sample(again, p.algorithm, p.temperature, p.top_k, p.top_p,
                                                     convention, rng, threads)
    if p.algorithm == "random":
        conf = rng.random(masked.size)  # LLaDA 'random' remasking: uniform confidence
    if p.algorithm == "origin":
        take = np.flatnonzero(rng.random(masked.size) < reveal_p)
        order = take
    else:
        keys = conf
        if p.alg_temp > 0:
            # Sampling k positions without replacement from softmax(conf / alg_temp) (Dream),
            # done as Gumbel top-k.
            keys = conf / p.alg_temp - np.log(-np.log(rng.random(masked.size)))
        ranked = np.argsort(-keys, kind="stable")
        if dynamic:
            k = max(k, threshold_count(conf[ranked], p.threshold, p.factor))
        order = ranked[: min(k, masked.size)]
    return masked[order], idx[order].astype(np.int32), np.asarray(conf[order], dtype=np.float64)


def _start_block(s: _Seq, block_length: int, steps_per_block: int, mask_id: int, schedule: str) -> None:
    s.step_in_block = 0
    if schedule == "block":
        b_start = s.gen_start + s.block * block_length
        masked = int(np.count_nonzero(s.canvas[b_start:b_start + block_length] == mask_id))
        s.counts = block_transfer_counts(masked, steps_per_block)


def _advance(s: _Seq, p, block_length, n_blocks, steps_per_block, vocab: VocabInfo, trim_at_eog,
             dynamic) -> np.ndarray:
    """Move to the next block or finish; returns positions filled by early stop (usually none)."""
    none = np.zeros(0, np.int64)
    # A pass over a block (or canvas) with no mask left commits nothing and draws no randomness;
    # threshold decoding and early stop skip such passes (--steps far above the length, for one).
    skip_empty = dynamic or p.early_stop
    if p.early_stop and trim_at_eog:
        filled = _settle_answer(s, vocab)
        if filled is not None:
            s.finished = True
            return filled
    if p.schedule == "timestep":
        if s.step_in_block >= p.steps or (skip_empty and not (s.canvas[s.gen_start:] == vocab.mask_id).any()):
            s.finished = True
        return none
    while True:
        b_start = s.gen_start + s.block * block_length
        block_open = (s.canvas[b_start:b_start + block_length] == vocab.mask_id).any()
        if s.step_in_block < steps_per_block and (block_open or not skip_empty):
            return none
        s.block += 1
        if s.block >= n_blocks:
            s.finished = True
            return none
        _start_block(s, block_length, steps_per_block, vocab.mask_id, p.schedule)


def _settle_answer(s: _Seq, vocab: VocabInfo) -> np.ndarray | None:
    """If the first end-of-generation token has only committed tokens before it, the trimmed
    answer can no longer change: fill the masks after it and return their positions; else None."""
    if not vocab.eog_ids:
        return None
    gen = s.canvas[s.gen_start:]
    is_mask = gen == vocab.mask_id
    first_eog = np.flatnonzero(np.isin(gen, np.fromiter(vocab.eog_ids, dtype=np.int64)))
    if first_eog.size == 0 or is_mask[: first_eog[0]].any():
        return None
    fill = np.flatnonzero(is_mask) + s.gen_start
    if vocab.fill_id is not None:
        s.canvas[fill] = vocab.fill_id
        return fill
    return np.zeros(0, np.int64)
