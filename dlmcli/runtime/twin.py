"""Load a LLaDA or Dream GGUF under its autoregressive twin architecture, without copying the file.

llama.cpp gives the diffusion archs no KV memory, but ``llada`` has exactly the tensors and graph of
``llama`` and ``dream`` those of ``qwen2`` (same tensor names, biases, RoPE type, norm; see
docs/kv-cache.md). Loaded as the twin, a model gets a KV cache, and with causal attention switched
off a batch attends to every cached cell of its sequence: what an approximate prefix cache needs.

``kv_overrides`` cannot do the renaming: llama.cpp reads ``<arch>.feed_forward_length`` and
``<arch>.attention.head_count[_kv]`` with ``get_key_or_arr``, which looks in the file only. So the
header is rewritten in memory (``general.architecture`` and every ``<arch>.`` key renamed) and the
model is read through a virtual file: the new header, then the original file's tensor data section,
read in place. On glibc that file is a ``fopencookie`` stream handed to
``llama_model_load_from_file_ptr`` (no mmap: tensors are read into llama.cpp's buffers); elsewhere
a rewritten copy is written to a temporary file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import struct
import sys
import tempfile
from pathlib import Path

from ..errors import ModelError

TWIN_ARCH = {"llada": "llama", "dream": "qwen2"}

# What the twin's graph would use but the diffusion graph ignores (llama-cpp-python 0.3.36,
# src/models/llada.cpp vs llama.cpp, dream.cpp vs qwen2.cpp): such a file would give other logits.
_IGNORED_BY_DIFFUSION = {
    "llada": ("attn_output.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias", "rope_freqs.weight"),
    "dream": ("output.bias",),
}
_KEYS_IGNORED_BY_DIFFUSION = {"llada": ("attention.scale", "expert_count"), "dream": ()}

# GGUF value types (ggml/include/gguf.h) and their fixed sizes; 8 = string, 9 = array.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class _Reader:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelError(f"{self.path}: truncated or corrupt GGUF header")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u64())

    def skip_value(self, vtype: int) -> None:
        if vtype in _SIZES:
            self.take(_SIZES[vtype])
        elif vtype == _STRING:
            self.take(self.u64())
        elif vtype == _ARRAY:
            etype, n = self.u32(), self.u64()
            if etype in _SIZES:
                self.take(_SIZES[etype] * n)
            elif etype == _STRING:
                for _ in range(n):
                    self.take(self.u64())
            else:
                raise ModelError(f"{self.path}: GGUF array of type {etype} is not supported")
        else:
            raise ModelError(f"{self.path}: unknown GGUF value type {vtype}")


def _gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


class TwinHeader:
    """The rewritten header (padded to the data section) and where the original data section starts."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise ModelError(f"{self.path}: truncated or corrupt GGUF header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                self._parse(m, size)  # slicing an mmap copies: no buffer stays exported

    def _parse(self, buf, size: int) -> None:
        r = _Reader(buf, self.path)
        if r.take(4) != b"GGUF":
            raise ModelError(f"{self.path} is not a GGUF file")
        version = r.u32()
        if version not in (2, 3):
            raise ModelError(f"{self.path}: GGUF version {version} cannot be loaded under a twin architecture")
        n_tensors, n_kv = r.u64(), r.u64()
        kvs: list[tuple[bytes, int, bytes]] = []
        arch = None
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = r.string()
            vtype = r.u32()
            start = r.pos
            r.skip_value(vtype)
            value = bytes(buf[start:r.pos])
            if key == b"general.architecture" and vtype == _STRING:
                arch = value[8:].decode("utf-8", "replace")
            if key == b"general.alignment" and vtype == 4:
                alignment = struct.unpack("<I", value)[0]
            kvs.append((key, vtype, value))
        if arch not in TWIN_ARCH:
            raise ModelError(f"{self.path}: architecture '{arch}' has no KV-cache twin; --cache works for "
                             f"{', '.join(sorted(TWIN_ARCH))}")
        if alignment == 0 or alignment % 8:
            raise ModelError(f"{self.path}: GGUF alignment {alignment} is invalid")
        ti_start = r.pos
        names = []
        for _ in range(n_tensors):
            names.append(r.string().decode("utf-8", "replace"))
            n_dims = r.u32()
            r.take(8 * n_dims + 4 + 8)
        ignored = [n for n in names if n.endswith(_IGNORED_BY_DIFFUSION[arch])]
        ignored += [k.decode() for k, _, _ in kvs
                    if k.decode("utf-8", "replace").startswith(arch + ".")
                    and k.decode("utf-8", "replace")[len(arch) + 1:] in _KEYS_IGNORED_BY_DIFFUSION[arch]]
        if ignored:
            raise ModelError(f"{self.path} has {ignored[0]}, which llama.cpp's {arch} graph ignores but its "
                             f"KV-cache twin ({TWIN_ARCH[arch]}) would use; --cache cannot run it exactly")
        tensor_infos = bytes(buf[ti_start:r.pos])
        self.data_offset = -(-r.pos // alignment) * alignment
        if self.data_offset > size:
            raise ModelError(f"{self.path}: truncated GGUF (no tensor data)")
        self.arch, self.twin = arch, TWIN_ARCH[arch]
        src, dst = (arch + ".").encode(), (self.twin + ".").encode()
        out = [b"GGUF", struct.pack("<IQQ", version, n_tensors, n_kv)]
        for key, vtype, value in kvs:
            if key == b"general.architecture":
                value = _gguf_string(self.twin.encode())
            elif key.startswith(src):
                key = dst + key[len(src):]
            out += [_gguf_string(key), struct.pack("<I", vtype), value]
        out.append(tensor_infos)
        header = b"".join(out)
        self.header = header + b"\0" * (-len(header) % alignment)
        self.data_size = size - self.data_offset
        self.size = len(self.header) + self.data_size


# --- a virtual file: the new header, then the original data section -----------------------------

class _CookieIO(ctypes.Structure):
    _fields_ = [("read", ctypes.c_void_p), ("write", ctypes.c_void_p), ("seek", ctypes.c_void_p),
                ("close", ctypes.c_void_p)]


_READ = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int)
_CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fopencookie = libc.fopencookie
    except (OSError, AttributeError):  # musl has it too, but be safe: fall back to a copy
        return None
    fopencookie.restype = ctypes.c_void_p
    fopencookie.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _CookieIO]
    libc.fclose.argtypes = [ctypes.c_void_p]
    return libc


class TwinFile:
    """A ``FILE *`` reading the twin GGUF (``.ptr``); ``close()`` releases it. Used only during loading."""

    def __init__(self, header: TwinHeader):
        self.h = header
        self.ptr = None
        self._fd: int | None = os.open(header.path, os.O_RDONLY)
        self._pos = 0
        self._tmp: str | None = None
        self._libc = _libc()
        try:
            if self._libc is not None:
                self._callbacks = (_READ(self._read), _SEEK(self._seek), _CLOSE(lambda _c: 0))
                read, seek, close = (ctypes.cast(cb, ctypes.c_void_p) for cb in self._callbacks)
                io = _CookieIO(read, None, seek, close)  # no write: the stream is read-only
                self.ptr = self._libc.fopencookie(None, b"rb", io)
            if not self.ptr:
                self._libc = None
                self._write_copy()
        except BaseException:
            self.close()
            raise

    def _read(self, _cookie, buf, size) -> int:
        try:
            h, done = self.h, 0
            while done < size and self._pos < h.size:
                if self._pos < len(h.header):
                    chunk = h.header[self._pos:self._pos + (size - done)]
                    ctypes.memmove(buf + done, chunk, len(chunk))
                    n = len(chunk)
                else:
                    want = min(size - done, h.size - self._pos)
                    view = (ctypes.c_char * want).from_address(buf + done)
                    if self._fd is None:  # closed
                        return -1
                    n = os.preadv(self._fd, [view], h.data_offset + self._pos - len(h.header))
                    if n <= 0:
                        break
                done += n
                self._pos += n
            return done
        except BaseException:  # never raise into C; fread reports the short read
            return -1

    def _seek(self, _cookie, offset, whence) -> int:
        try:
            base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.h.size}[whence]
            pos = base + offset[0]
            if pos < 0:
                return -1
            self._pos = offset[0] = pos
            return 0
        except BaseException:
            return -1

    def _write_copy(self) -> None:
        # No fopencookie: a rewritten copy in a temporary file, removed on close.
        import shutil

        fd, name = tempfile.mkstemp(suffix=".gguf", prefix="dlm-twin-")
        self._tmp = name
        with os.fdopen(fd, "wb") as out, open(self.h.path, "rb") as src:
            out.write(self.h.header)
            src.seek(self.h.data_offset)
            shutil.copyfileobj(src, out, 1 << 24)

    @property
    def copy_path(self) -> str | None:
        return self._tmp

    def close(self) -> None:
        if self.ptr and self._libc is not None:
            self._libc.fclose(self.ptr)
        self.ptr = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None
