"""An approximate prefix cache (Fast-dLLM's "prefix cache") over llama.cpp's KV cache.

The model is loaded under its autoregressive twin arch (runtime/twin.py), so its context has a KV
cache; causal attention is switched off, so every token of a batch attends to every cached cell of
its sequence. Per canvas the caller names the window of rows it will read (the current block).

- If the canvas before the window is the one cached, the cells from the window start on are
  removed (``llama_memory_seq_rm``) and only window + suffix are decoded, against the cached
  prefix K/V (computed, with the whole canvas in view, at the last full pass).
- Otherwise (a new block committed tokens before the window, a new canvas, another length) the
  whole canvas is decoded again and becomes the cached one.

With the block schedule this is Fast-dLLM's prefix cache: a full pass at each block start, then
the block and everything after it recomputed. Exact when the prefix K/V are fresh (the test
``tests/test_kvcache.py`` checks this); approximate in that the cached prefix K/V do not see the
block's later commits. Only window rows get logits (llama.cpp computes no others).

llama.cpp only accepts a batch that starts right after the last cached position of its sequence
(``llama_batch_allocr::init``: "Y = X + 1"), so the suffix cannot stay cached while the block is
recomputed: Fast-dLLM's dual cache is not possible through this API (docs/kv-cache.md).
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

from ..errors import Aborted, GenerationError
from . import native
from .native import lib

GGML_TYPE_F32 = 0
FLASH_ATTN_AUTO, FLASH_ATTN_OFF = -1, 0  # enum llama_flash_attn_type


class KVContext:
    """A llama.cpp context with a unified KV cache of ``n_cells`` cells over ``n_seq`` sequences,
    non-causal, and a batch of that capacity built over numpy arrays."""

    def __init__(self, model, n_cells: int, n_seq: int, n_threads: int, flash_attn: int = FLASH_ATTN_AUTO):
        self.ptr = None
        params = lib.llama_context_default_params()
        params.n_ctx = n_cells
        params.n_batch = n_cells
        params.n_ubatch = n_cells  # non-causal attention: the whole batch in one micro-batch
        params.n_seq_max = n_seq
        params.kv_unified = True  # sequences of different lengths share one pool of cells
        # f32 K/V: the cache adds no rounding the no-cache pass does not have (f16 would).
        params.type_k = params.type_v = GGML_TYPE_F32
        params.flash_attn_type = flash_attn
        params.no_perf = True
        params.n_threads = params.n_threads_batch = n_threads
        ptr = native.call_interruptibly(lib.llama_init_from_model, model.ptr, params, free=lib.llama_free)
        if not ptr:
            raise GenerationError(
                f"llama.cpp could not create a context with a KV cache of {n_cells} cells for {n_seq} "
                f"sequence(s) (out of memory?); try a shorter --gen-length, fewer GPU layers, or --cache off"
            )
        self.ptr = ptr
        self.n_cells = n_cells
        self.n_seq = n_seq
        lib.llama_set_causal_attn(ptr, False)
        self.abort_flag = ctypes.c_int(0)  # this context's own (Runtime.abort)
        self._abort_hook = native.set_abort_callback(ptr, self.abort_flag)
        self.mem = lib.llama_get_memory(ptr)
        # The batch: numpy arrays owned here, pointed to by a llama_batch we never hand to
        # llama_batch_free (so filling it needs no per-token Python loop).
        n = n_cells
        self.token = np.zeros(n, np.int32)
        self.pos = np.zeros(n, np.int32)
        self.n_seq_id = np.ones(n, np.int32)
        self.seq = np.zeros(n, np.int32)
        self.logits = np.zeros(n, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self._seq_ptrs = (i32p * n)(*(ctypes.cast(base + 4 * i, i32p) for i in range(n)))
        # Fields given to the constructor: llama_cpp annotates these pointers as arrays.
        self.batch = lib.llama_batch(
            token=self.token.ctypes.data_as(ctypes.POINTER(lib.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(i32p),
            seq_id=ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def seq_rm(self, seq: int, start: int) -> None:
        """Drop the cells of sequence ``seq`` at positions >= start."""
        if not lib.llama_memory_seq_rm(self.mem, seq, start, -1):
            raise GenerationError("llama.cpp refused to drop KV-cache cells (llama_memory_seq_rm)")

    def close(self) -> None:
        if self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            lib.llama_free(ptr)


class PrefixCache:
    """``forward(canvases, windows)`` with a prefix cache per canvas slot (see the module doc)."""

    def __init__(self, model, n_threads, flash_attn: int = FLASH_ATTN_AUTO, budget=None):
        self.model = model
        self.budget = budget  # dlmcli.memory.Budget: a larger context is checked before it is made
        self.n_threads = n_threads  # an int, or a function of the tokens a pass holds
        self.flash_attn = flash_attn  # llama.cpp's choice, as for the no-cache pass
        self.ctx: KVContext | None = None
        self._cached: list[np.ndarray | None] = []  # per slot: the canvas of its last full pass
        self._abort = 0
        self.full_passes = 0  # canvases decoded in full
        self.partial_passes = 0  # canvases decoded from their window on
        self.tokens_decoded = 0

    def clear(self) -> None:
        """Forget what the cells hold: every canvas's next pass is a full one."""
        self._cached = [None] * len(self._cached)

    def abort(self) -> None:
        """Stop the pass running now (or the next one) with ``Aborted``; safe from any thread."""
        self._abort = 1
        if self.ctx is not None:
            self.ctx.abort_flag.value = 1

    def _reserve(self, n_cells: int, n_seq: int) -> None:
        if self.ctx and self.ctx.n_cells >= n_cells and self.ctx.n_seq >= n_seq:
            return
        n_cells = max(n_cells, self.ctx.n_cells if self.ctx else 0)
        n_seq = max(n_seq, self.ctx.n_seq if self.ctx else 1)
        if self.budget is not None:
            self.budget.check(n_cells, n_seq)
        self.close()
        threads = self.n_threads(n_cells) if callable(self.n_threads) else self.n_threads
        self.ctx = KVContext(self.model, n_cells, n_seq, threads, self.flash_attn)
        self._cached = [None] * n_seq

    def __call__(self, canvases: Sequence[np.ndarray], windows: Sequence[tuple[int, int]] | None = None
                 ) -> list[np.ndarray]:
        if windows is None:
            windows = [(0, len(c)) for c in canvases]
        self._reserve(sum(len(c) for c in canvases), len(canvases))
        ctx = self.ctx
        assert ctx is not None  # _reserve() made it
        for s in range(len(canvases), ctx.n_seq):  # slots not used now: free their cells
            ctx.seq_rm(s, 0)
            self._cached[s] = None
        off = 0
        spans = []
        for s, (canvas, (w0, w1)) in enumerate(zip(canvases, windows)):
            n = len(canvas)
            if not 0 <= w0 < w1 <= n:
                raise GenerationError(f"row window {w0}..{w1} outside a canvas of {n} positions")
            old = self._cached[s]
            reuse = (old is not None and len(old) == n and w0 > 0
                     and np.array_equal(old[:w0], canvas[:w0]))
            start = w0 if reuse else 0
            ctx.seq_rm(s, start)
            if reuse:
                self.partial_passes += 1
            else:
                self._cached[s] = np.array(canvas, dtype=np.int32)
                self.full_passes += 1
            m = n - start
            ctx.token[off:off + m] = canvas[start:]
            ctx.pos[off:off + m] = np.arange(start, n, dtype=np.int32)
            ctx.seq[off:off + m] = s
            ctx.logits[off:off + m] = 0
            ctx.logits[off + w0 - start:off + w1 - start] = 1
            spans.append(w1 - w0)
            off += m
        ctx.batch.n_tokens = off
        self.tokens_decoded += off
        try:
            ctx.abort_flag.value = self._abort
            with native.interruptible():
                rc = lib.llama_decode(ctx.ptr, ctx.batch)
                # As in Runtime.forward: reading the logits waits for the backends (RPC hosts), so
                # that wait is part of the interruptible call too.
                ptr = lib.llama_get_logits(ctx.ptr) if rc == 0 else None
            if ctx.abort_flag.value:
                ctx.abort_flag.value = self._abort = 0
                raise Aborted("the forward pass was aborted")
            if rc != 0:
                raise GenerationError(f"llama.cpp forward pass failed (llama_decode returned {rc})")
        except BaseException:
            self._cached = [None] * ctx.n_seq  # what the cells hold is unknown now: start over
            raise
        rows = sum(spans)
        flat = np.ctypeslib.as_array(ptr, shape=(rows, self.model.n_vocab))
        out, r = [], 0
        for k in spans:
            out.append(flat[r:r + k])
            r += k
        return out

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None
