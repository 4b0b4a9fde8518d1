"""One thread per model owns its llama.cpp context and runs the engine's Scheduler.

Request handlers only ``submit`` sequences and ``cancel`` them; the worker admits queued sequences
into the next pass up to ``max_batch``, runs one shared forward pass per step, and hands each
sequence its Step through the sequence's own callback. Nothing here is process-wide.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..engine.denoise import Scheduler
from ..engine.events import Step
from ..engine.params import GenerationParams
from ..errors import DlmError


class QueueFull(Exception):
    """More sequences are waiting than the server accepts; the client should retry later."""


@dataclass(eq=False)
class Sequence:
    """One canvas to denoise for one request (one choice of it).

    ``on_step(step)`` is called from the worker thread after every pass it took part in;
    ``on_end(error)`` once, with None when it finished and the exception when it failed or was
    dropped. Both must be quick (they hand data to another thread)."""

    canvas: np.ndarray
    gen_start: int
    params: GenerationParams
    on_step: Callable[[Step], None]
    on_end: Callable[[BaseException | None], None]
    seed_index: int = 0
    submitted: float = field(default_factory=time.monotonic)
    id: int | None = None  # the scheduler's id once admitted
    cancelled: bool = False


class ModelWorker:
    def __init__(self, model, *, max_batch: int, max_queue: int, metrics=None, name: str = "model"):
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.name = name
        self._sched = Scheduler(model.runtime.forward, model.vocab_info)
        self._pending: deque[Sequence] = deque()
        self._active: dict[int, Sequence] = {}
        self._cancelled: list[Sequence] = []
        self._cond = threading.Condition()
        self._stop = False
        self._drop = False
        self._thread = threading.Thread(target=self._run, name=f"dlm-worker-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- called from request handlers -------------------------------------------------------
    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences for the next passes (all of a request's choices, or none of them)."""
        with self._cond:
            if self._stop:
                raise QueueFull("the server is shutting down")
            if len(self._pending) + len(seqs) > self.max_queue + max(0, self.max_batch - len(self._active)):
                raise QueueFull(f"{len(self._pending)} sequences are already waiting")
            self._pending.extend(seqs)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """The client went away: the sequence leaves before the next pass (or never joins)."""
        with self._cond:
            if seq.cancelled:
                return
            seq.cancelled = True
            self._cancelled.append(seq)
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return len(self._active)

    def stop(self, abort: bool = False) -> None:
        """End the thread; with ABORT, stop the pass in flight and fail what is left."""
        with self._cond:
            self._stop = True
            self._drop = abort
            self._cond.notify()
        if abort:
            self.model.runtime.abort()
        self._thread.join()

    # --- the worker thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._pending or self._active or self._cancelled):
                    self._cond.wait()
                if self._stop and (self._drop or not (self._active or self._pending)):
                    break
                for seq in self._cancelled:
                    if seq.id is not None and seq.id in self._active:
                        self._sched.remove(seq.id)
                        del self._active[seq.id]
                    elif seq in self._pending:
                        self._pending.remove(seq)
                    else:
                        continue
                    self._end(seq, None)
                self._cancelled.clear()
                admit: list[Sequence] = []
                tokens, n_seq = self._pass_size(self._active.values())
                while self._pending and len(self._active) + len(admit) < self.max_batch:
                    seq = self._pending[0]
                    more_tokens, more_seq = self._pass_size([seq])
                    verdict = self._fits(tokens + more_tokens, n_seq + more_seq)
                    if verdict is not None and (self._active or admit):
                        break  # it waits until the pass has room (first in, first out)
                    self._pending.popleft()
                    if verdict is not None:  # too large even alone: only this request fails
                        self._end(seq, verdict)
                        continue
                    admit.append(seq)
                    tokens, n_seq = tokens + more_tokens, n_seq + more_seq
            for seq in admit:
                try:
                    seq.id = self._sched.add(seq.canvas, seq.gen_start, seq.params, seed_index=seq.seed_index)
                except DlmError as e:
                    self._end(seq, e)
                    continue
                self._active[seq.id] = seq
                if self.metrics:
                    self.metrics.observe_wait(time.monotonic() - seq.submitted)
            if not self._active:
                continue
            try:
                steps = self._sched.step()
            except BaseException as e:  # noqa: BLE001 (the pass failed for every sequence in it)
                for sid in list(self._active):
                    self._sched.remove(sid)
                    self._end(self._active.pop(sid), e)
                if not isinstance(e, Exception):
                    raise
                continue
            if self.metrics and steps:
                self.metrics.observe_pass(len(steps), steps[0].forward_s,
                                          sum(len(s.positions) for s in steps))
            for st in steps:
                live = self._active.get(st.seq)
                if live is not None and not live.cancelled:
                    live.on_step(st)
            for sid, exc in self._sched.failures:
                self._end(self._active.pop(sid), exc)
            for sid in [sid for sid in self._active if sid not in self._sched]:
                self._end(self._active.pop(sid), None)
        with self._cond:
            left = list(self._pending) + list(self._active.values())
            self._pending.clear()
            self._active.clear()
        for seq in left:
            self._end(seq, DlmError("the server shut down before this request finished"))

    @staticmethod
    def _pass_size(seqs) -> tuple[int, int]:
        """Positions and sequences these take in a pass (classifier-free guidance: twice)."""
        tokens = n_seq = 0
        for seq in seqs:
            tokens += seq.params.pass_copies * len(seq.canvas)
            n_seq += seq.params.pass_copies
        return tokens, n_seq

    def _fits(self, n_tokens: int, n_seq: int) -> DlmError | None:
        """None if a pass of this size fits the memory check, else the check's error: one request's
        size must not fail the others in its pass."""
        try:
            self.model.runtime.check_room(n_tokens, n_seq)
        except DlmError as e:
            return e
        return None

    def _end(self, seq: Sequence, error: BaseException | None) -> None:
        try:
            seq.on_end(error)
        except Exception:  # noqa: BLE001 (a handler's callback must not kill the worker)
            pass
