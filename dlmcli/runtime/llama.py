"""Owners of llama.cpp handles: one class per native object, closed in a fixed order.

``Runtime`` owns a model, a context sized for the canvases it is asked to run, and a batch.
Closing is idempotent and frees the context before the model.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.ctypeslib  # noqa: F401  (loaded now, not lazily during the first pass: see engine/denoise.py)

from ..errors import Aborted, GenerationError, ModelError, UsageError, param
from . import native, rpc
from .native import lib
from .kvcache import PrefixCache
from .twin import TWIN_ARCH, TwinFile, TwinHeader

GGUF_MAGIC = b"GGUF"
ALL_LAYERS = 999  # llama.cpp clamps to the model's layer count
LOAD_MODE_NONE = 0  # enum llama_load_mode: read tensors into buffers, no mmap
MAX_THREADS = 512  # GGML_MAX_N_THREADS; far more threads than cores crashed inside OpenMP


def check_gguf_file(path: Path) -> None:
    """Fail early, with a clear message, on files llama.cpp would reject with only a log line."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a .gguf file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# Parameters x canvas tokens (about half the FLOPs of one pass) under which a pass runs on one thread.
SMALL_PASS_WORK = 2_000_000_000


def _others_running() -> float:
    """Processes runnable now besides this one: the least of a few samples of Linux's procs_running
    (a busy neighbour is always there; a passing one is missed), else the 1-minute load average
    (which also counts this process's own recent runs)."""
    try:
        seen = []
        for _ in range(5):
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"procs_running"):
                        seen.append(int(line.split()[1]))
                        break
            time.sleep(0.002)
        if seen:
            return max(0, min(seen) - 1)
    except (OSError, ValueError):
        pass
    return os.getloadavg()[0]


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores nobody else is using now: ours minus the others running, rounded (1 at least; 1 where
    the platform tells neither)."""
    cores = cores or available_cores()
    if load is None:
        try:
            load = _others_running()
        except (AttributeError, OSError):
            return 1
    return max(1, min(cores, int(cores - load + 0.5)))


def default_threads(model: "LlamaModel", n_tokens: int) -> int:
    """Passes too small to share (the bundled tiny models: 6M parameters x a 40-token canvas, a few
    ms) get only the cores that are idle now: llama.cpp's spin-waiting workers slowed them 5-100x
    when other processes shared the cores, while on an idle machine one thread was 1.6x slower than
    llama-diffusion-cli's two. Larger passes (46M parameters x 256 tokens: 1.2e10) get every core,
    as llama-diffusion-cli does (docs/performance.md)."""
    if model.n_params * max(1, n_tokens) < SMALL_PASS_WORK:
        return idle_cores()
    return available_cores()


SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # LLAMA_SPLIT_MODE_*


@dataclass(frozen=True)
class Devices:
    """Where a model's layers go: llama.cpp's RPC hosts and multi-GPU split (docs/distributed.md).

    ``rpc``: "HOST:PORT,..." or a list of them; ``split_mode``: none, layer or row; ``tensor_split``:
    proportions per device ("3,1" or a list), in llama.cpp's device order (RPC hosts first, then the
    local GPUs); ``main_gpu``: the device index used with split mode none (and for row-split
    intermediates). None everywhere: llama.cpp's defaults.
    """

    rpc: str | Sequence[str] | None = None
    split_mode: str | None = None
    tensor_split: str | Sequence[float] | None = None
    main_gpu: int | None = None

    @property
    def endpoints(self) -> list:
        text = self.rpc if isinstance(self.rpc, str) or self.rpc is None else ",".join(self.rpc)
        return rpc.parse_endpoints(text)

    def split(self) -> list[float] | None:
        ts = self.tensor_split
        if ts is None or (isinstance(ts, str) and not ts.strip()):
            return None
        try:
            vals = [float(x) for x in (ts.replace("/", ",").split(",") if isinstance(ts, str) else ts)]
        except ValueError:
            raise UsageError(f"--tensor-split {ts!r}: expected proportions such as 3,1") from None
        if any(not v >= 0 or v == float("inf") for v in vals) or not sum(vals) > 0:
            raise UsageError(f"--tensor-split {ts!r}: proportions must be non-negative and not all zero")
        return vals

    def check(self) -> None:
        """Refuse bad values before anything is loaded or contacted."""
        _ = self.endpoints  # parsed only for its errors (a bad --rpc)
        self.split()
        if self.split_mode is not None and self.split_mode not in SPLIT_MODES:
            raise UsageError(f"--split-mode {self.split_mode!r}: use none, layer or row")
        if self.main_gpu is not None and self.main_gpu < 0:
            raise UsageError(f"--main-gpu must be 0 or more (got {self.main_gpu})")


class LlamaModel:
    """A loaded llama.cpp model (weights + vocabulary).

    ``twin``: load a llada/dream file under its autoregressive twin arch (llama/qwen2), which gets
    a KV cache (runtime/twin.py); ``arch`` and ``is_diffusion`` still describe the file.
    ``devices``: RPC hosts and the multi-device split (Devices).
    """

    def __init__(self, path: Path, n_gpu_layers: int = ALL_LAYERS, devices: Devices | None = None, *,
                 twin: bool = False):
        self.ptr = None
        self.path = Path(path)
        self.twin_of: str | None = None
        devices = devices or Devices()
        devices.check()
        check_gguf_file(self.path)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = ALL_LAYERS if n_gpu_layers < 0 else min(n_gpu_layers, ALL_LAYERS)  # C int
        params.progress_callback = native.progress_callback
        keep = self._set_devices(params, devices)  # referenced until the load returns
        with native.capture_log() as log:
            if twin:
                header = TwinHeader(self.path)
                self.twin_of = header.arch
                tf = TwinFile(header)
                try:
                    if tf.copy_path is None:
                        params.load_mode = LOAD_MODE_NONE  # a cookie stream has no fd to mmap
                        ptr = native.call_interruptibly(lib.llama_model_load_from_file_ptr, tf.ptr, params,
                                                        free=lib.llama_model_free)
                    else:
                        ptr = native.call_interruptibly(lib.llama_model_load_from_file,
                                                        os.fsencode(tf.copy_path), params, free=lib.llama_model_free)
                finally:
                    tf.close()
            else:
                ptr = native.call_interruptibly(lib.llama_model_load_from_file, os.fsencode(self.path), params,
                                                free=lib.llama_model_free)
        del keep
        if not ptr:
            raise ModelError(
                f"llama.cpp could not load {self.path} (truncated or corrupt GGUF, or an architecture this "
                f"llama.cpp does not know); run with --verbose to see its log"
            )
        self.ptr = ptr
        self._load_log = "".join(line for line in log.lines if "assigned to device" in line
                                 or "model buffer size" in line)
        self.vocab = lib.llama_model_get_vocab(ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    @staticmethod
    def _set_devices(params, devices: Devices) -> list:
        keep: list = []
        rpc_devices = rpc.add_servers(devices.endpoints)
        chosen = rpc.model_devices(rpc_devices)
        if chosen is not None:
            arr = (ctypes.c_void_p * (len(chosen) + 1))(*[d.ptr for d in chosen], None)  # NULL-terminated
            keep.append(arr)
            params.devices = ctypes.cast(arr, ctypes.c_void_p)
        n_devices = len(chosen) if chosen is not None else None
        if devices.split_mode is not None:
            params.split_mode = SPLIT_MODES[devices.split_mode]
        if devices.main_gpu is not None:
            if n_devices is not None and devices.main_gpu >= max(n_devices, 1):
                raise UsageError(f"--main-gpu {devices.main_gpu}: there are {n_devices} device(s) "
                                 f"(RPC hosts first, then local GPUs); use 0 to {max(n_devices - 1, 0)}")
            params.main_gpu = devices.main_gpu
        split = devices.split()
        if split is not None:
            cap = int(lib.llama_max_devices())
            if len(split) > cap or (n_devices is not None and len(split) > max(n_devices, 1)):
                raise UsageError(f"--tensor-split has {len(split)} proportions but there are "
                                 f"{n_devices if n_devices is not None else cap} device(s)")
            proportions = (ctypes.c_float * cap)(*split)
            keep.append(proportions)
            params.tensor_split = proportions
        return keep

    @property
    def placement(self) -> "rpc.Placement | None":
        """Which device llama.cpp put each layer on, from its load log."""
        return rpc.parse_placement(self._load_log)

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None when the key is absent."""
        if self.twin_of is not None:
            if key == "general.architecture":
                return self.twin_of
            twin = TWIN_ARCH[self.twin_of]
            if key.startswith(self.twin_of + "."):
                key = twin + key[len(self.twin_of):]
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def chat_template(self) -> str | None:
        raw = lib.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    @property
    def is_diffusion(self) -> bool:
        return self.twin_of is not None or bool(lib.llama_model_is_diffusion(self.ptr))

    @property
    def n_ctx_train(self) -> int:
        return int(lib.llama_model_n_ctx_train(self.ptr))

    @property
    def n_params(self) -> int:
        return int(lib.llama_model_n_params(self.ptr))

    def close(self) -> None:
        if self.ptr is not None:
            ptr, self.ptr, self.vocab = self.ptr, None, None
            lib.llama_model_free(ptr)


class LlamaContext:
    """A context able to run ``n_tokens`` positions split over up to ``n_seq`` sequences in one pass."""

    def __init__(self, model: LlamaModel, n_tokens: int, n_seq: int, n_threads: int | None):
        self.ptr = None
        params = lib.llama_context_default_params()
        params.n_ctx = n_tokens
        params.n_batch = n_tokens
        params.n_ubatch = n_tokens  # no KV memory: the whole canvas must fit one micro-batch
        params.n_seq_max = n_seq
        params.no_perf = True
        # llama.cpp's default is 4 threads whatever the machine; on fewer cores its spinning workers
        # oversubscribe (seen 5-30x slower on a busy 2-core box). Default to the cores we may use.
        n_threads = n_threads or default_threads(model, n_tokens)
        params.n_threads = params.n_threads_batch = n_threads
        # Interruptible too: llama.cpp logs from here, and a Ctrl-C may land in that callback.
        ptr = native.call_interruptibly(lib.llama_init_from_model, model.ptr, params, free=lib.llama_free)
        if not ptr:
            raise GenerationError(
                f"llama.cpp could not create a context for {n_tokens} tokens in {n_seq} sequence(s) "
                f"(out of memory?); try a shorter --gen-length or fewer GPU layers (--ngl)"
            )
        self.ptr = ptr
        self.n_tokens = n_tokens
        self.n_seq = n_seq
        lib.llama_set_causal_attn(ptr, False)
        # This context's own abort flag: a server stops one context's pass, not the process's.
        self.abort_flag = ctypes.c_int(0)
        self._abort_hook = native.set_abort_callback(ptr, self.abort_flag)

    def close(self) -> None:
        if self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            lib.llama_free(ptr)


class LlamaBatch:
    """A token batch with numpy views over its arrays, so filling it costs no Python loop."""

    def __init__(self, capacity: int, n_seq: int):
        self.capacity = capacity
        self.batch = lib.llama_batch_init(capacity, 0, n_seq)
        self.alive = True
        b = self.batch
        self.token = np.ctypeslib.as_array(b.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(b.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(b.n_seq_id, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(b.logits, shape=(capacity,))
        self._layout: tuple = ()

    def fill(self, canvases: Sequence[np.ndarray]) -> None:
        layout = tuple(len(c) for c in canvases)
        n = sum(layout)
        if n > self.capacity:
            raise GenerationError(f"batch of {n} tokens exceeds capacity {self.capacity}")
        if layout != self._layout:
            off = 0
            for s, length in enumerate(layout):
                self.pos[off:off + length] = np.arange(length)
                for i in range(off, off + length):
                    self.batch.seq_id[i][0] = s
                off += length
            self.n_seq_id[:n] = 1
            self.logits[:n] = 1
            self._layout = layout
        self.token[:n] = np.concatenate(canvases) if len(canvases) > 1 else canvases[0]
        self.batch.n_tokens = n

    def close(self) -> None:
        if self.alive:
            self.alive = False
            lib.llama_batch_free(self.batch)


CACHES = ("off", "prefix", "dual")


def check_cache(cache: str) -> None:
    if cache not in CACHES:
        raise UsageError(f"--cache must be one of {', '.join(CACHES)} (got {cache!r})")
    if cache == "dual":
        raise UsageError("--cache dual is not possible over llama.cpp: it accepts no batch that fills a gap "
                         "before cached positions (docs/kv-cache.md); use --cache prefix")


class Runtime:
    """A model plus whatever context and batch the current canvases need."""

    def __init__(self, path: Path, *, n_gpu_layers: int = ALL_LAYERS, n_threads: int | None = None,
                 verbose: bool = False, devices: Devices | None = None, cache: str = "off", budget=None):
        if n_threads is not None and not 1 <= n_threads <= MAX_THREADS:
            raise UsageError(f"{param('threads')} must be between 1 and {MAX_THREADS} (got {n_threads})")
        check_cache(cache)
        native.init(verbose)
        self.n_threads = n_threads
        self.cache = cache
        self.budget = budget  # dlmcli.memory.Budget: a larger context is checked before it is made
        self.ctx: LlamaContext | None = None
        self.batch: LlamaBatch | None = None
        self.prefix: PrefixCache | None = None
        # With a cache the model is loaded under its twin arch, which has KV memory (runtime/twin.py).
        self.model = LlamaModel(path, n_gpu_layers, devices, twin=cache != "off")
        if cache == "prefix":
            self.prefix = PrefixCache(self.model, n_threads or (lambda n: default_threads(self.model, n)),
                                      budget=budget)
        self._pieces: dict[int, bytes] = {}
        self._abort = 0
        self._logits: tuple[tuple[int, int], np.ndarray] | None = None  # ((address, rows), view)

    # --- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("the text holds lone surrogates (undecodable bytes), which are not UTF-8; "
                             "pass str decoded from valid UTF-8") from None
        cap = len(data) + 8
        buf = (lib.llama_token * cap)()
        n = lib.llama_tokenize(self.model.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (lib.llama_token * cap)()
            n = lib.llama_tokenize(self.model.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token stands for (cached; control tokens are empty unless special)."""
        key = token if not special else ~token
        got = self._pieces.get(key)
        if got is None:
            buf = ctypes.create_string_buffer(64)
            n = lib.llama_token_to_piece(self.model.vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib.llama_token_to_piece(self.model.vocab, token, buf, -n, 0, special)
            got = buf.raw[:n]
            self._pieces[key] = got
        return got

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(int(t)) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(lib.llama_vocab_is_eog(self.model.vocab, token))

    @property
    def mask_id(self) -> int:
        return int(lib.llama_vocab_mask(self.model.vocab))

    @property
    def bos_id(self) -> int:
        return int(lib.llama_vocab_bos(self.model.vocab))

    @property
    def eos_id(self) -> int:
        return int(lib.llama_vocab_eos(self.model.vocab))

    @property
    def add_bos(self) -> bool:
        return bool(lib.llama_vocab_get_add_bos(self.model.vocab))

    # --- forward pass -----------------------------------------------------------------------
    def abort(self) -> None:
        """Stop the forward pass running now (or the next one) with ``Aborted``; safe from any thread."""
        self._abort = 1
        if self.ctx is not None:
            self.ctx.abort_flag.value = 1
        if self.prefix is not None:
            self.prefix.abort()

    def _grown(self, n_tokens: int, n_seq: int) -> tuple[int, int] | None:
        """The context a pass of this size needs (it grows, never shrinks); None if the one made holds it."""
        if self.ctx and self.ctx.n_tokens >= n_tokens and self.ctx.n_seq >= n_seq:
            return None
        return max(n_tokens, self.ctx.n_tokens if self.ctx else 0), max(n_seq, self.ctx.n_seq if self.ctx else 1)

    def check_room(self, n_tokens: int, n_seq: int) -> None:
        """Raise the memory check's error if a pass of this size needs a context that does not fit."""
        size = self._grown(n_tokens, n_seq)
        if size is not None and self.budget is not None and self.prefix is None:
            self.budget.check(*size)

    def reserve(self, n_tokens: int, n_seq: int) -> None:
        """Make sure one pass can hold n_tokens over n_seq sequences (grows, never shrinks)."""
        size = self._grown(n_tokens, n_seq)
        if size is None:
            return
        n_tokens, n_seq = size
        if self.budget is not None:
            self.budget.check(n_tokens, n_seq)
        self._close_ctx()
        self.ctx = LlamaContext(self.model, n_tokens, n_seq, self.n_threads)
        self.batch = LlamaBatch(n_tokens, n_seq)

    def forward(self, canvases: Sequence[np.ndarray],
                windows: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Logits for the rows [start, stop) of each canvas's window (default: every row): float32
        views valid until the next call. With the prefix cache, rows outside are not computed."""
        if self.prefix is not None:
            return self.prefix(canvases, windows)
        n = sum(len(c) for c in canvases)
        self.reserve(n, len(canvases))
        ctx, batch = self.ctx, self.batch
        assert ctx is not None and batch is not None  # reserve() made them
        batch.fill(canvases)
        ctx.abort_flag.value = self._abort
        with native.interruptible():
            rc = lib.llama_decode(ctx.ptr, batch.batch)
            # llama_decode may return before the backends finish (RPC hosts do): reading the logits
            # waits for them, so that wait is part of the interruptible call too.
            ptr = lib.llama_get_logits(ctx.ptr) if rc == 0 else None
        if ctx.abort_flag.value:
            ctx.abort_flag.value = self._abort = 0
            raise Aborted("the forward pass was aborted")
        if rc != 0:
            raise GenerationError(f"llama.cpp forward pass failed (llama_decode returned {rc})")
        # One view per logits buffer and size, not per pass: as_array made a ctypes array type
        # each time (about 25 us, 0.7 % of a tiny model's step).
        assert ptr is not None  # rc == 0
        at = (ctypes.addressof(ptr.contents), n)
        if self._logits is None or self._logits[0] != at:
            self._logits = at, np.ctypeslib.as_array(ptr, shape=(n, self.model.n_vocab))
        flat = self._logits[1]
        out, off = [], 0
        for i, c in enumerate(canvases):
            w0, w1 = windows[i] if windows is not None else (0, len(c))
            out.append(flat[off + w0:off + w1])
            off += len(c)
        return out

    def _close_ctx(self) -> None:
        if self.batch is not None:
            self.batch.close()
            self.batch = None
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None
        self._logits = None

    def close(self) -> None:
        """Free batch, then contexts, then model. Safe to call twice."""
        self._close_ctx()
        if self.prefix is not None:
            self.prefix.close()
        self.model.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
