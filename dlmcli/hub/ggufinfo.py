"""`dlm info`: read a GGUF's header (metadata and tensor shapes) without touching the weights.

Not gguf.GGUFReader: it builds a numpy view per array element while opening, which takes ~7 s on a
150k-token vocabulary. This reader walks the header once over an mmap, skipping the token and merge arrays
by their length prefixes, and needs neither numpy nor the weights (~0.1 s on the same file).
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

# GGUF value types (the format's own numbering).
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(13)
_SCALAR = {
    _UINT8: "B",
    _INT8: "b",
    _UINT16: "H",
    _INT16: "h",
    _UINT32: "I",
    _INT32: "i",
    _FLOAT32: "f",
    _BOOL: "?",
    _UINT64: "Q",
    _INT64: "q",
    _FLOAT64: "d",
}

# general.file_type values (llama_ftype) and tensor types (ggml_type) by number, as llama.cpp defines them.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
_TENSOR_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class ArrayRef:
    """An array value left unread: its element type, length and where it starts in the file."""

    type: int
    count: int
    offset: int
    endian: str = "<"


@dataclass
class Header:
    version: int
    metadata: dict[str, Any]  # scalars and strings as Python values; arrays as ArrayRef
    tensors: list[tuple[str, tuple[int, ...], int]]  # (name, shape, ggml type)


class _Cursor:
    def __init__(self, buf, path: Path, endian: str):
        self.buf, self.pos, self.path, self.e = buf, 0, path, endian

    def unpack(self, fmt: str):
        try:
            values = struct.unpack_from(self.e + fmt, self.buf, self.pos)
        except struct.error:
            raise ModelError(f"{self.path} is truncated or not a GGUF file") from None
        self.pos += struct.calcsize(self.e + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise ModelError(f"{self.path} is truncated or not a GGUF file")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("IQ")
            ref = ArrayRef(etype, count, self.pos, self.e)
            self.skip_array(etype, count)
            return ref
        raise ModelError(f"{self.path}: unknown GGUF value type {vtype}")

    def skip_array(self, etype: int, count: int) -> None:
        if etype in _SCALAR:
            self.pos += count * struct.calcsize(_SCALAR[etype])
        elif etype == _STRING:
            unpack, e, buf, pos = struct.unpack_from, self.e + "Q", self.buf, self.pos
            try:
                for _ in range(count):
                    pos += 8 + unpack(e, buf, pos)[0]
            except struct.error:
                raise ModelError(f"{self.path} is truncated or not a GGUF file") from None
            self.pos = pos
        elif etype == _ARRAY:
            for _ in range(count):
                inner, n = self.unpack("IQ")
                self.skip_array(inner, n)
        else:
            raise ModelError(f"{self.path}: unknown GGUF array type {etype}")
        if self.pos > len(self.buf):
            raise ModelError(f"{self.path} is truncated or not a GGUF file")


def read_header(path: Path) -> Header:
    """Metadata and tensor shapes of one GGUF file (memory-mapped; arrays are skipped, not read)."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ModelError(f"cannot open {path}: {exc.strerror}") from None
    with fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise ModelError(f"{path} is empty, not a GGUF file") from None
        with mm:
            return _parse(mm, path)


def _parse(buf, path: Path) -> Header:
    if bytes(buf[:4]) != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file")
    endian = "<"
    cur = _Cursor(buf, path, endian)
    cur.pos = 4
    version = cur.unpack("I")
    if version > 0xFFFF:  # written big-endian
        endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
        cur.e = endian
    if version < 2:
        raise ModelError(f"{path} is GGUF version {version}, too old; convert it again with a recent llama.cpp")
    n_tensors, n_kv = cur.unpack("QQ")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("I"))
    tensors, ends = [], []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        ttype, offset = cur.unpack("IQ")
        tensors.append((name, shape, ttype))
        ends.append(offset + _tensor_bytes(shape, ttype))
    align = metadata.get("general.alignment")
    align = align if isinstance(align, int) and align > 0 else 32
    data_start = -(-cur.pos // align) * align
    needed = data_start + max(ends, default=0)
    if len(buf) < needed:  # an interrupted copy or download: the header is whole, the weights are not
        raise ModelError(f"{path} is truncated: its tensors need {needed} bytes but the file has {len(buf)}; "
                         f"download or copy it again")
    return Header(version, metadata, tensors)


def _tensor_bytes(shape: tuple[int, ...], ttype: int) -> int:
    """Bytes of one tensor's data (0 for a type this gguf package does not know: only its offset counts)."""
    import gguf

    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        return 0
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def array_string(path: Path, ref: ArrayRef, index: int) -> str | None:
    """Element ``index`` of a string array, found by hopping over the ones before it."""
    if ref.type != _STRING or not 0 <= index < ref.count:
        return None
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos = ref.offset
        for _ in range(index):
            pos += 8 + struct.unpack_from(ref.endian + "Q", mm, pos)[0]
        n = struct.unpack_from(ref.endian + "Q", mm, pos)[0]
        return bytes(mm[pos + 8 : pos + 8 + n]).decode("utf-8", errors="replace")


@dataclass
class GGUFInfo:
    """What `dlm info` shows. Missing keys are None."""

    path: str
    files: list[str]
    size: int  # bytes, all shards
    version: int
    architecture: str | None
    name: str | None
    parameters: int  # elements over all tensors of all shards
    quant: str | None
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    expert_count: int | None
    expert_used_count: int | None
    vocab_size: int | None
    mask_token_id: int | None
    mask_token: str | None
    shift_logits: bool | None
    causal_attention: bool | None
    bos_token_id: int | None
    eos_token_id: int | None
    eot_token_id: int | None
    chat_template: bool
    license: str | None
    tensors: int
    extra: dict[str, Any] = field(default_factory=dict)
    dlm_keys: dict[str, Any] = field(default_factory=dict)  # the file's own dlm.* settings, as stored
    chat_template_text: str | None = None  # the Jinja source, as the file has it (untrusted: never rendered here)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


MAX_SHARDS = 99999  # gguf-split names shards -NNNNN-of-NNNNN.gguf


def shard_paths(first: Path, count: int) -> list[Path]:
    """The sibling shard files of a split GGUF, from the first shard's name."""
    m = _SHARD.search(first.name)
    if not m:
        return [first]
    stem = first.name[: m.start()]
    return [first.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def read_info(path: Path) -> GGUFInfo:
    """Summarise a GGUF (the first shard of a split model stands for all of them)."""
    path = Path(path)
    head = read_header(path)
    md = head.metadata
    arch = md.get("general.architecture")

    def arch_key(suffix: str):
        return md.get(f"{arch}.{suffix}") if arch else None

    split_count = md.get("split.count")
    files = [path]
    tensors = list(head.tensors)
    if isinstance(split_count, int) and split_count > MAX_SHARDS:
        raise ModelError(f"{path.name} says it is split into {split_count} files; a split GGUF has at most "
                         f"{MAX_SHARDS} (the file is malformed)")
    if isinstance(split_count, int) and split_count > 1:
        files = shard_paths(path, split_count)
        for shard in files[1:]:
            if not shard.is_file():
                raise ModelError(f"{path.name} is shard 1 of {split_count} but {shard.name} is missing")
            tensors += read_header(shard).tensors

    params = 0
    by_type: dict[int, int] = {}
    for _name, shape, ttype in tensors:
        n = 1
        for d in shape:
            n *= d
        params += n
        if len(shape) >= 2:
            by_type[ttype] = by_type.get(ttype, 0) + n
    file_type = md.get("general.file_type")
    quant = _FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    if quant is None and by_type:
        quant = _TENSOR_TYPES.get(max(by_type, key=by_type.__getitem__))

    tokens = md.get("tokenizer.ggml.tokens")
    vocab = tokens.count if isinstance(tokens, ArrayRef) else arch_key("vocab_size")
    mask_id = md.get("tokenizer.ggml.mask_token_id")
    mask_text = None
    if isinstance(tokens, ArrayRef) and isinstance(mask_id, int):
        mask_text = array_string(path, tokens, mask_id)
    shift = md.get("diffusion.shift_logits")
    causal = arch_key("attention.causal")
    return GGUFInfo(
        path=str(path),
        files=[str(f) for f in files],
        size=sum(f.stat().st_size for f in files),
        version=head.version,
        architecture=arch,
        name=md.get("general.name"),
        parameters=params,
        quant=quant,
        context_length=arch_key("context_length"),
        block_count=arch_key("block_count"),
        embedding_length=arch_key("embedding_length"),
        expert_count=arch_key("expert_count"),
        expert_used_count=arch_key("expert_used_count"),
        vocab_size=vocab,
        mask_token_id=mask_id,
        mask_token=mask_text,
        shift_logits=bool(shift) if shift is not None else None,
        causal_attention=bool(causal) if causal is not None else None,
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=md.get("tokenizer.ggml.eos_token_id"),
        eot_token_id=md.get("tokenizer.ggml.eot_token_id"),
        chat_template=isinstance(md.get("tokenizer.chat_template"), str),
        chat_template_text=md.get("tokenizer.chat_template") if isinstance(md.get("tokenizer.chat_template"), str)
        else None,
        license=md.get("general.license"),
        tensors=len(tensors),
        dlm_keys={k: v for k, v in md.items() if k.startswith("dlm.") and isinstance(v, (int, float, str))},
    )
