"""The denoising loop: pure numpy, blind to llama.cpp and to the terminal.

``Scheduler`` holds any number of canvases, each with its own parameters, and runs one shared
forward pass per ``step`` for all of them, returning one ``Step`` per sequence; sequences join
(``add``) and leave (``remove``, or by finishing) between steps. ``denoise_batch`` (a fixed list)
and ``denoise`` (one canvas) are loops over it; so are ``dlm generate``, ``--batch`` and the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import numpy.random  # noqa: F401  (numpy loads it lazily; a Ctrl-C inside that import mid-run got lost)

from ..errors import DlmError, GenerationError, UsageError
from .events import Step
from .params import GenerationParams
from .schedule import Schedule, threshold_count
from .scoring import Rows, sample

# forward(canvases, windows) -> logits per canvas for the rows [start, stop) its window names, each
# float32 [stop - start, vocab]; may be views that the next call overwrites. The window is the rows
# the engine reads this step (the current block's, shifted for Dream); a runtime may use it to
# compute no other rows (the prefix cache, runtime/kvcache.py).
Forward = Callable[[Sequence[np.ndarray], Sequence[tuple[int, int]]], Sequence[np.ndarray]]


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
    """One canvas in the scheduler, with its own settings, plan and random stream."""

    id: int
    canvas: np.ndarray
    gen_start: int
    params: GenerationParams
    uncond_mask: np.ndarray  # positions blanked in CFG's unconditional pass (initially non-mask)
    rng: np.random.Generator
    trim_at_eog: bool
    plan: Schedule  # its blocks and how many positions each pass commits
    passes: int = 0
    block: int = 0
    step_in_block: int = 0
    counts: list = field(default_factory=list)
    finished: bool = False

    @property
    def convention(self) -> str:
        return "raw" if self.params.schedule == "block" else "sampled"

    @property
    def dynamic(self) -> bool:
        return self.params.threshold is not None or self.params.factor is not None


def sequence_rng(seed: int | None, index: int) -> np.random.Generator:
    """Sequence INDEX draws from the INDEX-th child of SEED, so its randomness depends on neither the
    batch it runs in nor its place there (``SeedSequence(seed).spawn(n)[index]``, built directly)."""
    root = np.random.SeedSequence(seed)
    return np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(index,)))


class Scheduler:
    """Sequences that share forward passes: ``add`` joins the next pass, ``remove`` leaves it,
    ``step`` runs one pass for every sequence present and returns one Step per sequence.

    Each sequence keeps its own parameters, length and schedule; what one sequence computes
    depends only on its own logits, so its answer does not depend on who shares the pass.
    A finished sequence leaves by itself after the step that finished it. Not thread-safe: one
    thread owns a scheduler (and the forward function's llama.cpp context) at a time.
    """

    def __init__(self, forward: Forward, vocab: VocabInfo):
        self.forward = forward
        self.vocab = vocab
        self._seqs: dict[int, _Seq] = {}
        self._next_id = 0
        # (sequence id, exception) for sequences that failed during the last step; they have left.
        self.failures: list[tuple[int, Exception]] = []

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    @property
    def ids(self) -> list[int]:
        return list(self._seqs)

    def add(self, canvas: np.ndarray, gen_start: int, params: GenerationParams, *, seed_index: int = 0,
            trim_at_eog: bool = True, seq_id: int | None = None) -> int:
        """Add a canvas (prompt then masks); it takes part from the next step. Returns its id.

        ``trim_at_eog``: the answer ends at its first end-of-generation token, so once every position
        before that token is committed the answer cannot change; with ``params.early_stop`` the rest
        is filled with ``vocab.fill_id`` and no more passes are spent on it.
        ``seed_index``: which child of ``params.seed`` the sequence draws from (see ``sequence_rng``).
        """
        p = params
        c = np.array(canvas, dtype=np.int32)
        region = len(c) - gen_start
        if region <= 0:
            raise UsageError("nothing to generate: the canvas has no positions after the prompt")
        plan = Schedule.of(p, region)
        if seq_id is None:
            seq_id = self._next_id
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} is already in the scheduler")
        self._next_id = max(self._next_id, seq_id + 1)
        s = _Seq(seq_id, c, gen_start, p, c != self.vocab.mask_id, sequence_rng(p.seed, seed_index), trim_at_eog,
                 plan)
        _start_block(s, self.vocab.mask_id)
        self._seqs[seq_id] = s
        return seq_id

    def remove(self, seq_id: int) -> None:
        """Take a sequence out; it is not in the next step (unknown or finished ids are ignored)."""
        self._seqs.pop(seq_id, None)

    def step(self) -> list[Step]:
        """One forward pass for every sequence present; returns their Steps (empty when none).

        A sequence whose host-side work fails (NaN logits, say) leaves with its exception in
        ``failures``; the others go on. A failing forward pass raises: it failed for all of them.
        """
        self.failures = []
        active = list(self._seqs.values())
        if not active:
            return []
        mask_id = self.vocab.mask_id
        batch = [s.canvas for s in active]
        plan = [_rows_to_read(s, self.vocab) for s in active]
        windows = [w for *_, w in plan]
        uncond_at = {}
        for i, s in enumerate(active):
            if s.params.cfg > 0:
                uncond_at[s.id] = len(batch)
                batch.append(np.where(s.uncond_mask, mask_id, s.canvas).astype(np.int32))
                windows.append(windows[i])
        t0 = time.perf_counter()
        logits = self.forward(batch, windows)
        forward_s = time.perf_counter() - t0

        out = []
        for i, s in enumerate(active):
            try:
                out.append(self._advance_one(s, plan[i], logits[i],
                                             logits[uncond_at[s.id]] if s.id in uncond_at else None,
                                             forward_s, len(active)))
            except DlmError as e:
                self.failures.append((s.id, e))
                s.finished = True
            if s.finished:
                del self._seqs[s.id]
        return out

    def _advance_one(self, s: _Seq, plan, logits: np.ndarray, uncond: np.ndarray | None, forward_s: float,
                     n_active: int) -> Step:
        p, vocab = s.params, self.vocab
        t1 = time.perf_counter()
        b_start, b_end, masked, rows_idx, (w0, _) = plan
        # Only the competing rows are read, in place: no copy of the logits.
        rows = Rows(logits, rows_idx - w0, uncond, p.cfg + 1.0)

        if p.schedule == "block":
            k = s.counts[s.step_in_block] if s.step_in_block < len(s.counts) else 0
            last = s.step_in_block == s.plan.steps_per_block - 1
            reveal_p = 1.0 if last or masked.size == 0 else k / masked.size
        else:
            step_no = s.step_in_block
            k = s.plan.timestep_commits(masked.size, step_no)
            last = step_no == p.steps - 1
            ts = s.plan.timesteps
            reveal_p = 1.0 if last else 1.0 - ts[step_no + 1] / ts[step_no]

        chosen, tok, conf = _choose(rows, masked, k, reveal_p, p, s.convention, s.dynamic, s.rng, vocab.mask_id,
                                    vocab.threads)
        s.canvas[chosen] = tok
        s.step_in_block += 1
        block_now = s.block
        filled = _advance(s, vocab)
        if filled.size:
            chosen = np.concatenate([chosen, filled])
            tok = np.concatenate([tok, s.canvas[filled]])
            conf = np.concatenate([conf, np.full(filled.size, np.nan)])
        canvas_view = s.canvas.copy()
        canvas_view.setflags(write=False)
        index = s.passes
        s.passes += 1
        return Step(
            index=index, planned_steps=p.steps, block=block_now, n_blocks=s.plan.n_blocks, block_start=b_start,
            block_end=b_end, gen_start=s.gen_start, canvas=canvas_view, positions=chosen, tokens=tok,
            confidences=conf, masks_left=int(np.count_nonzero(s.canvas[s.gen_start:] == vocab.mask_id)),
            forward_s=forward_s, sampling_s=time.perf_counter() - t1, seq=s.id, batch=n_active,
        )


def denoise(canvas: np.ndarray, gen_start: int, params: GenerationParams, forward: Forward,
            vocab: VocabInfo, *, trim_at_eog: bool = True) -> Iterator[Step]:
    """Denoise one canvas; yields a Step per forward pass."""
    for steps in denoise_batch([canvas], [gen_start], params, forward, vocab, trim_at_eog=trim_at_eog):
        yield steps[0]


def denoise_batch(canvases: Sequence[np.ndarray], gen_starts: Sequence[int],
                  params: GenerationParams | Sequence[GenerationParams], forward: Forward, vocab: VocabInfo, *,
                  trim_at_eog: bool = True, first_index: int = 0) -> Iterator[list[Step]]:
    """Denoise several canvases together, one forward pass for all unfinished ones per step.

    ``params``: one for all, or one per canvas. ``first_index``: index of the first canvas in a
    longer list split into batches; canvas i is sequence ``first_index + i`` and draws from that
    child of its seed, so its answer does not depend on the batch size.
    """
    plist = [params] * len(canvases) if isinstance(params, GenerationParams) else list(params)
    if len(plist) != len(canvases):
        raise ValueError("one GenerationParams per canvas, or one for all")
    sched = Scheduler(forward, vocab)
    for i, (canvas, gen_start, p) in enumerate(zip(canvases, gen_starts, plist)):
        sched.add(canvas, gen_start, p, seed_index=first_index + i, trim_at_eog=trim_at_eog, seq_id=first_index + i)
    while len(sched):
        steps = sched.step()
        if sched.failures:
            raise sched.failures[0][1]
        yield steps


def _rows_to_read(s: _Seq, vocab: VocabInfo):
    """The current block, its masked positions, the logits rows that predict them, and the window of
    rows to ask the forward pass for: the block's rows (stable through the block, so a runtime can
    tell a block start), widened to any masked row outside it."""
    lo, hi = s.plan.bounds(s.block)
    b_start, b_end = s.gen_start + lo, s.gen_start + hi
    masked = np.flatnonzero(s.canvas[:b_end] == vocab.mask_id)
    shift = 1 if vocab.shift else 0
    rows_idx = np.maximum(masked - shift, 0)
    w0, w1 = max(b_start - shift, 0), max(b_end - shift, 1)
    if rows_idx.size:
        w0, w1 = min(w0, int(rows_idx[0])), max(w1, int(rows_idx[-1]) + 1)
    return b_start, b_end, masked, rows_idx, (w0, w1)


def _choose(rows, masked, k, reveal_p, p: GenerationParams, convention, dynamic, rng, mask_id, threads=1):
    """Pick positions to commit; returns (positions, tokens, confidences)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0))
    if masked.size == 0 or (k == 0 and not dynamic and p.algorithm != "origin"):
        return empty
    if p.algorithm == "origin":
        # Dream's order: the coin flips first, then only the rows that transfer are sampled (about
        # 1/steps of them per step), not every masked row.
        take = np.flatnonzero(rng.random(masked.size) < reveal_p)
        if take.size == 0:
            return empty
        rows, masked = Rows.of(rows).subset(take), masked[take]
    idx, conf = sample(rows, p.algorithm, p.temperature, p.top_k, p.top_p, convention, rng, threads)
    # (np.count_nonzero, not .any(), on this per-step path: .any() goes through Python, 3x slower)
    if np.count_nonzero(np.isnan(conf)):  # a NaN or infinite logit makes its row's confidence NaN
        raise GenerationError("the model produced NaN or infinite logits; its weights are probably corrupt "
                              "(try another copy or quant of the model)")
    picked_mask = idx == mask_id
    if np.count_nonzero(picked_mask):
        # The authors' code would commit the mask itself (a trained model never predicts it; a random
        # or broken one can). Only those rows are redrawn without it, so every other run is unchanged.
        again = Rows.of(rows).subset(picked_mask).array()
        again[:, mask_id] = -np.inf
        idx[picked_mask], conf[picked_mask] = sample(again, p.algorithm, p.temperature, p.top_k, p.top_p,
                                                     convention, rng, threads)
    if p.algorithm == "random":
        conf = rng.random(masked.size)  # LLaDA 'random' remasking: uniform confidence
    if p.algorithm == "origin":
        order = np.arange(masked.size)
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


def _start_block(s: _Seq, mask_id: int) -> None:
    s.step_in_block = 0
    if s.params.schedule == "block":
        lo, hi = s.plan.bounds(s.block)
        masked = int(np.count_nonzero(s.canvas[s.gen_start + lo:s.gen_start + hi] == mask_id))
        s.counts = s.plan.block_commits(masked)


def _advance(s: _Seq, vocab: VocabInfo) -> np.ndarray:
    """Move to the next block or finish; returns positions filled by early stop (usually none)."""
    p = s.params
    none = np.zeros(0, np.int64)
    # A pass over a block (or canvas) with no mask left commits nothing and draws no randomness;
    # threshold decoding and early stop skip such passes (--steps far above the length, for one).
    skip_empty = s.dynamic or p.early_stop
    if p.early_stop and s.trim_at_eog:
        filled = _settle_answer(s, vocab)
        if filled is not None:
            s.finished = True
            return filled
    if p.schedule == "timestep":
        if s.step_in_block >= p.steps or (skip_empty and not (s.canvas[s.gen_start:] == vocab.mask_id).any()):
            s.finished = True
        return none
    while True:
        lo, hi = s.plan.bounds(s.block)
        block_open = np.count_nonzero(s.canvas[s.gen_start + lo:s.gen_start + hi] == vocab.mask_id) > 0
        if s.step_in_block < s.plan.steps_per_block and (block_open or not skip_empty):
            return none
        s.block += 1
        if s.block >= s.plan.n_blocks:
            s.finished = True
            return none
        _start_block(s, vocab.mask_id)


def _settle_answer(s: _Seq, vocab: VocabInfo) -> np.ndarray | None:
    """If the first end-of-generation token has only committed tokens before it, the trimmed
    answer can no longer change: fill the masks after it and return their positions; else None."""
    if not vocab.eog_ids:
        return None
    gen = s.canvas[s.gen_start:]
    is_mask = gen == vocab.mask_id
    is_eog = np.zeros(gen.shape, bool)
    for t in vocab.eog_ids:  # a few ids: np.isin's set machinery cost 23 us a pass, this 5
        is_eog |= gen == t
    first_eog = np.flatnonzero(is_eog)
    if first_eog.size == 0 or is_mask[: first_eog[0]].any():
        return None
    fill = np.flatnonzero(is_mask) + s.gen_start
    if vocab.fill_id is not None:
        s.canvas[fill] = vocab.fill_id
        return fill
    return np.zeros(0, np.int64)
