"""Will a model fit? The memory a load needs (from the GGUF's tensor sizes and the canvas), against
what the machine has free (MemAvailable, the cgroup's limit, DLM_MEMORY_LIMIT; a GPU's free memory).

Pure arithmetic over the file's header plus a read of /proc and /sys: no llama.cpp here. The
figures are estimates, measured against llama.cpp 0.3.36 on CPU (docs/reliability.md): on a
46M-parameter model they came out 5-10% above the peak resident memory of a whole run.

What a load takes, by where it lives (llama.cpp's own placement, llama-model.cpp):
- weights: every tensor's bytes. With ``-ngl K`` the output layer and the last K-1 repeating
  layers go to the GPU; the token embedding always stays in host memory.
- the output buffer (host): logits for every canvas position (diffusion passes output them all),
  n_tokens x n_vocab float32.
- the compute buffer (where the output layer runs): the logits tensor again, plus the activations
  of one layer (embedding and feed-forward widths) and the attention mask (n_tokens^2).
- the KV cache (only with --cache prefix): float32 K and V for every layer and position.
- the process itself (Python, numpy, llama.cpp's libraries): a fixed allowance.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import DlmError, UsageError, param

PROCESS_OVERHEAD = 96 * 2**20  # Python, numpy and llama.cpp's libraries, threads and small buffers
LIMIT_ENV = "DLM_MEMORY_LIMIT"
PROMPT_ALLOWANCE = 64  # prompt tokens assumed before the prompt is known (the exact canvas is checked later)
GPU_TYPES = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU

MAX_LAYERS = 4096  # more repeating layers than this: no estimate (llama.cpp itself refuses more than 512)
MAX_SHARDS = 9999  # split.count past this: no estimate (gguf-split numbers shards in 5 digits)
MAX_DIM = 1 << 40  # a width, count or context past this (or negative, or not finite) is taken as absent

_BLOCK = re.compile(r"^blk\.(\d+)\.")


class ShapeError(ValueError):
    """The header's shape is beyond what the estimate handles (too many layers or shards): no check."""


class MemoryCheckError(DlmError):
    """The load would need more memory than is free (``memory_check=False``, the CLI's
    ``--no-memory-check``, skips the check). ``need`` and ``free``: the bytes (host, or GPU when ``gpu``);
    ``n_tokens``: the canvas checked."""

    need = free = n_tokens = 0
    gpu = False

    def _with(self, need: int, free: int, n_tokens: int, gpu: bool) -> "MemoryCheckError":
        self.need, self.free, self.n_tokens, self.gpu = need, free, n_tokens, gpu
        return self


def _options(hints: list[str]) -> str:
    """'A, B, or --no-memory-check to load it anyway' (no dangling 'or' when there is no other advice)."""
    last = "--no-memory-check to load it anyway"
    return ", ".join(hints + [f"or {last}"]) if hints else last


def gib(n: float) -> str:
    """Bytes as the messages show them: '4.9 GiB', '812 MiB'."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def gib_pair(need: int, free: int) -> tuple[str, str, str]:
    """NEED and FREE as ``gib`` shows them, and a note: unless the two would print alike ('102 MiB ...
    but 102 MiB is free'), when both are shown in the larger one's unit with more digits or, if even that
    cannot tell them apart, the note says the shortfall (', 3 KiB short')."""
    units = ((2**30, "GiB", 1), (2**20, "MiB", 0), (2**10, "KiB", 0), (1, "bytes", 0))
    unit, name, digits = next(u for u in units if max(need, free) >= u[0] or u[0] == 1)

    def show(n: int, d: int) -> str:
        return f"{n / unit:.{d}f} {name}"

    if show(need, digits) != show(free, digits):
        return gib(need), gib(free), ""
    for d in range(digits + 1, digits + 3):
        if show(need, d) != show(free, d):
            return show(need, d), show(free, d), ""
    short = need - free
    shown = gib(short) if short >= 2**10 else f"{short} byte" + ("s" if short != 1 else "")
    return gib(need), gib(free), f", {shown} short"


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5GiB', '2000000' -> bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"{LIMIT_ENV}={text!r}: expected a size such as 8G, 512M or a number of bytes")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a GGUF header: tensor bytes by layer, and the widths."""

    layer_bytes: tuple[int, ...]  # repeating layer i's tensors (blk.i.*)
    input_bytes: int  # token_embd (host memory always)
    output_bytes: int  # output head + final norm (the GPU's first layer with -ngl); a tied head counts token_embd
    other_bytes: int  # anything else (rope tables...): host
    n_vocab: int
    n_embd: int
    n_ff: int
    n_embd_kv: int  # K (or V) width per position: head_dim x KV heads
    n_ctx: int = 0  # the training context (0: unknown)

    @property
    def n_layer(self) -> int:
        return len(self.layer_bytes)

    @property
    def weights(self) -> int:
        """Bytes of the file's tensors (a tied output head is not counted twice)."""
        return sum(self.layer_bytes) + self.input_bytes + self.other_bytes + self.head_bytes

    @property
    def head_bytes(self) -> int:
        return self.output_bytes if not self.tied else self.output_bytes - self.input_bytes

    tied: bool = False


def shape_of(metadata: dict[str, Any], tensors: Iterable[tuple[str, tuple[int, ...], int]]) -> Shape:
    """A Shape from a GGUF's metadata and (name, shape, ggml type) tensor list (all shards)."""
    from .hub.ggufinfo import ArrayRef, _tensor_bytes

    arch = metadata.get("general.architecture") or ""

    def num(key: str, default: int = 0) -> int:
        v = metadata.get(f"{arch}.{key}")
        if isinstance(v, ArrayRef) or not isinstance(v, (int, float)) or isinstance(v, bool):
            return default
        if not (isinstance(v, int) or math.isfinite(v)) or not 0 <= v <= MAX_DIM:
            return default  # inf, nan, negative or absurd: as if the key were absent
        return int(v)

    layers: dict[int, int] = {}
    sizes: dict[str, int] = {}
    for name, dims, ttype in tensors:
        size = _tensor_bytes(dims, ttype)
        m = _BLOCK.match(name)
        if m:
            layers[int(m.group(1))] = layers.get(int(m.group(1)), 0) + size
        else:
            sizes[name] = size
    n_layer = max(num("block_count"), max(layers, default=-1) + 1)
    if n_layer > MAX_LAYERS:
        raise ShapeError(f"{n_layer} layers")
    tokens = metadata.get("tokenizer.ggml.tokens")
    n_vocab = tokens.count if isinstance(tokens, ArrayRef) else num("vocab_size")
    n_embd = num("embedding_length")
    n_head = num("attention.head_count", 1) or 1
    head_dim = num("attention.key_length", n_embd // n_head if n_head else n_embd)
    n_embd_kv = head_dim * (num("attention.head_count_kv", n_head) or n_head)
    input_bytes = sizes.pop("token_embd.weight", 0)
    tied = "output.weight" not in sizes
    head = sizes.pop("output.weight", input_bytes)  # a tied head is duplicated onto the output's device
    head += sizes.pop("output_norm.weight", 0) + sizes.pop("output_norm.bias", 0) + sizes.pop("output.bias", 0)
    return Shape(layer_bytes=tuple(layers.get(i, 0) for i in range(n_layer)), input_bytes=input_bytes,
                 output_bytes=head, other_bytes=sum(sizes.values()), n_vocab=n_vocab, n_embd=n_embd,
                 n_ff=num("feed_forward_length"), n_embd_kv=n_embd_kv, n_ctx=num("context_length"), tied=tied)


@dataclass(frozen=True)
class FileHeader:
    metadata: dict[str, Any]
    tensors_all: list  # (name, shape, ggml type) over every shard


def read_header(path: str | os.PathLike) -> FileHeader:
    """A GGUF's metadata and the tensors of all its shards (a split model's first shard names them)."""
    from .hub.ggufinfo import read_header as read_one, shard_paths

    head = read_one(Path(path))
    tensors = list(head.tensors)
    count = head.metadata.get("split.count")
    if isinstance(count, int) and count > MAX_SHARDS:
        raise ShapeError(f"split.count {count}")
    if isinstance(count, int) and count > 1:
        for shard in shard_paths(Path(path), count)[1:]:
            tensors += read_one(shard).tensors
    return FileHeader(head.metadata, tensors)


def read_shape(path: str | os.PathLike) -> Shape:
    """The Shape of a GGUF file."""
    head = read_header(path)
    return shape_of(head.metadata, head.tensors_all)


@dataclass(frozen=True)
class Estimate:
    """Bytes a load needs: ``host`` in this machine's memory, ``device`` on the GPU(s)."""

    host: int
    device: int
    weights_host: int
    weights_device: int
    context: int  # output + compute (+ KV) buffers, wherever they live
    n_tokens: int
    n_seq: int
    gpu_layers: int  # layers (the output head counted as one) on the GPU
    weights_shared: bool = False  # the file is in RAM already (tmpfs): its host weights are not counted in host

    @property
    def total(self) -> int:
        return self.host + self.device

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def gpu_layers(shape: Shape, n_gpu_layers: int, have_gpu: bool) -> int:
    """How many of the n_layer + 1 offloadable layers llama.cpp puts on the GPU for ``-ngl``."""
    if not have_gpu or n_gpu_layers == 0:
        return 0
    every = shape.n_layer + 1
    return every if n_gpu_layers < 0 else min(n_gpu_layers, every)


def context_bytes(shape: Shape, n_tokens: int, n_seq: int = 1, kv: bool = False) -> tuple[int, int]:
    """(output buffer, compute buffer [+ KV cache]) for one pass over N_TOKENS positions."""
    output = n_tokens * shape.n_vocab * 4
    # The graph allocator reuses memory: the peak is the logits (with one feed-forward row) or a
    # layer's activations, whichever is larger, plus the f16 attention mask (fitted to llama.cpp's
    # reported compute buffer sizes: within 2% on the bundled and the 46M bench models).
    rows = max(shape.n_vocab + shape.n_ff, 3 * (shape.n_ff + shape.n_embd))
    compute = n_tokens * 4 * rows + n_tokens * n_tokens * 2
    if kv:
        compute += 2 * shape.n_layer * n_tokens * shape.n_embd_kv * 4  # float32 K and V (runtime/kvcache.py)
    return output, compute


def estimate(shape: Shape, n_tokens: int, *, n_seq: int = 1, n_gpu_layers: int = 0, have_gpu: bool = False,
             kv: bool = False, weights_shared: bool = False) -> Estimate:
    """What loading SHAPE and running one pass over N_TOKENS positions (all sequences) needs.
    ``weights_shared``: the file lives in RAM (tmpfs, ramfs): llama.cpp's mmap shares its pages, and
    MemAvailable already left them out, so the host's weights add nothing."""
    k = gpu_layers(shape, n_gpu_layers, have_gpu)
    first_gpu = shape.n_layer - (k - 1) if k else shape.n_layer  # the output head, then layers from the end
    on_gpu = shape.output_bytes + sum(shape.layer_bytes[first_gpu:]) if k else 0
    weights_host = (shape.input_bytes + shape.other_bytes + sum(shape.layer_bytes[:first_gpu])
                    + (0 if k else shape.head_bytes))
    output, compute = context_bytes(shape, n_tokens, n_seq, kv)
    counted = 0 if weights_shared else weights_host
    if k:  # the compute buffer lives with the output layer; the host keeps a small one for the input
        device = on_gpu + compute
        host = counted + output + n_tokens * 4 * 2 * shape.n_embd
    else:
        device = 0
        host = counted + output + compute
    return Estimate(host=host + PROCESS_OVERHEAD, device=device, weights_host=weights_host, weights_device=on_gpu,
                    context=output + compute, n_tokens=n_tokens, n_seq=n_seq, gpu_layers=k,
                    weights_shared=weights_shared)


# --- where the file lives ---------------------------------------------------------------------
RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)  # /proc/mounts: \040 is a space


def filesystem_of(path: str | os.PathLike, mounts: str | os.PathLike = "/proc/self/mounts") -> str | None:
    """The type of the filesystem PATH (resolved) lives on: the mount with the longest mount point
    that is a prefix of it (the last one mounted there); None off Linux or when the table is unreadable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        target = os.path.realpath(path)
        lines = Path(mounts).read_text().splitlines()
    except (OSError, ValueError):
        return None
    best, kind = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, kind = len(point), fields[2]
    return kind


def in_ram(path: str | os.PathLike, mounts: str | os.PathLike = "/proc/self/mounts") -> str | None:
    """'tmpfs' or 'ramfs' when PATH lives there (its pages are memory already: Shmem, which MemAvailable
    leaves out, and llama.cpp's mmap shares them rather than copying), else None."""
    kind = filesystem_of(path, mounts)
    return kind if kind in RAM_FILESYSTEMS else None


# --- what is free -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Free:
    """Free memory: ``host`` bytes (None when unknown) and where the figure came from; GPU devices."""

    host: int | None
    source: str
    gpus: tuple[tuple[str, int, int], ...] = ()  # (name, free, total) per GPU; total 0: free unknown

    @property
    def gpu(self) -> int:
        return sum(f for _, f, t in self.gpus if t > 0)

    @property
    def gpu_known(self) -> bool:
        """Whether every GPU says what it has free: a device reporting a total of 0 (Hexagon's HTP; CUDA
        when cudaMemGetInfo fails) does not, and then nothing is refused for the GPUs."""
        return all(t > 0 for _, _, t in self.gpus)


def _meminfo(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _file_pages(path: Path, prefix: str) -> int:
    """The cgroup's page cache (inactive and active file pages): reclaimable, and a model already read
    once (its own mmap'd pages, counted in usage) is in it: counting it as used would count it twice."""
    return _stat(path, prefix + "inactive_file") + _stat(path, prefix + "active_file")


def cgroup_free(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """What this process's memory cgroup still allows (limit - usage + file pages), or
    None when there is no limit. cgroup v2 and v1; the innermost limit that is readable."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            for d in (root / rel, root):
                limit = _read_int(d / "memory.max")
                usage = _read_int(d / "memory.current")
                if limit is not None and usage is not None:
                    free = limit - usage + _file_pages(d / "memory.stat", "")
                    best = free if best is None else min(best, free)
                    break
        elif "memory" in controllers.split(","):  # v1
            for d in (root / "memory" / rel, root / "memory"):
                limit = _read_int(d / "memory.limit_in_bytes")
                usage = _read_int(d / "memory.usage_in_bytes")
                if limit is not None and usage is not None and limit < 2**60:  # 2^63 - page: no limit
                    free = limit - usage + _file_pages(d / "memory.stat", "total_")
                    best = free if best is None else min(best, free)
                    break
    return None if best is None else max(0, best)


def free_host() -> tuple[int | None, str]:
    """Host memory free for a load, and which figure that is (the smallest of the known ones)."""
    found: list[tuple[int, str]] = []
    avail = _meminfo()
    if avail is not None:
        found.append((avail, "MemAvailable"))
    cg = cgroup_free()
    if cg is not None:
        found.append((cg, "the cgroup's memory limit"))
    limit = os.environ.get(LIMIT_ENV, "").strip()
    if limit:
        found.append((parse_size(limit), LIMIT_ENV))
    if not found:
        return None, "unknown"
    return min(found)


def free_now(devices: Sequence[dict] = ()) -> Free:
    """Free host memory, plus the GPUs among DEVICES (``runtime.native.device_memory()`` rows)."""
    host, source = free_host()
    gpus = tuple((d["name"], d["free"], d["total"]) for d in devices if d.get("type") in GPU_TYPES)
    return Free(host, source, gpus)


# --- the check ---------------------------------------------------------------------------------
@dataclass
class Budget:
    """A model's memory check: before the load (weights + a first canvas), then before each larger
    context (the exact canvas), against the memory that was free before the load."""

    name: str
    shape: Shape
    free: Free
    n_gpu_layers: int
    kv: bool = False
    remote: bool = False  # layers go to RPC hosts: their memory is theirs to check
    hints: list[str] = field(default_factory=list)  # what the refusal suggests besides the flag
    default_canvas: int = 128 + PROMPT_ALLOWANCE  # tokens of the first pass, before the prompt is known
    weights_in: str | None = None  # 'tmpfs' or 'ramfs' when the file lives in RAM (in_ram): its weights are shared

    @property
    def have_gpu(self) -> bool:
        return bool(self.free.gpus) or self.remote

    def estimate(self, n_tokens: int, n_seq: int = 1) -> Estimate:
        return estimate(self.shape, n_tokens, n_seq=n_seq, n_gpu_layers=self.n_gpu_layers, have_gpu=self.have_gpu,
                        kv=self.kv, weights_shared=self.weights_in is not None)

    def fits(self, est: Estimate) -> bool:
        """Whether ``check`` would let EST through (unknown free memory, host or GPU, is no refusal)."""
        host = self.free.host is None or est.host <= self.free.host
        gpu = not est.device or self.remote or not self.free.gpu_known or est.device <= self.free.gpu
        return host and gpu

    def check(self, n_tokens: int, n_seq: int = 1, what: str = "") -> Estimate:
        """Raise MemoryCheckError when a load plus a pass over N_TOKENS would not fit."""
        est = self.estimate(n_tokens, n_seq)
        canvas = what or f"a canvas of {n_tokens} tokens" + (f" over {n_seq} sequences" if n_seq > 1 else "")
        hints = list(self.hints)
        if est.context > (est.host + est.device) // 5:
            hints.insert(0, f"a shorter {param('gen_length')}")
        if self.free.host is not None and est.host > self.free.host:
            parts = f"weights in {self.weights_in}: shared" if self.weights_in else f"weights {gib(est.weights_host)}"
            if est.device == 0:
                parts += f", {gib(est.context)} for {canvas}"
            need, free, short = gib_pair(est.host, self.free.host)
            raise MemoryCheckError(
                f"{self.name} needs about {need} of memory ({parts}, {gib(PROCESS_OVERHEAD)} for dlm "
                f"itself) but {free} is free ({self.free.source}{short}); try "
                + _options(hints))._with(
                    est.host, self.free.host, n_tokens, False)
        if est.device and not self.remote and self.free.gpu_known and est.device > self.free.gpu:
            fit = self._layers_that_fit(n_tokens, n_seq)
            names = ", ".join(n for n, _, _ in self.free.gpus)
            need, free, short = gib_pair(est.device, self.free.gpu)
            raise MemoryCheckError(
                f"{self.name} needs about {need} of GPU memory ({est.gpu_layers} layers "
                f"{gib(est.weights_device)}, {gib(est.context)} for {canvas}) but {free} is free "
                f"on {names}{f' ({short[2:]})' if short else ''}; offload fewer layers (" + (f"--ngl {fit} should fit" if fit else
                                                         "--ngl 0 keeps the model in host memory") + "), or try "
                + _options(hints))._with(
                    est.device, self.free.gpu, n_tokens, True)
        return est

    def _layers_that_fit(self, n_tokens: int, n_seq: int) -> int:
        for k in range(self.shape.n_layer + 1, 0, -1):
            est = estimate(self.shape, n_tokens, n_seq=n_seq, n_gpu_layers=k, have_gpu=True, kv=self.kv,
                           weights_shared=self.weights_in is not None)
            if est.device <= self.free.gpu and (self.free.host is None or est.host <= self.free.host):
                return k
        return 0
