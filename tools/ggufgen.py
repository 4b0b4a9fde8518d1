"""Write small llama.cpp-loadable GGUF files: a character tokenizer, tensors, metadata.

Used by the tests (tiny random-weight models written on the fly), by the benchmarks (a random model
with LLaDA-8B's shapes) and by ``scripts/train_tiny.py`` (the bundled tiny models). It depends only
on numpy and the ``gguf`` package, never on llama.cpp.

The tokenizer is llama.cpp's SentencePiece model (``tokenizer.ggml.model = "llama"``) with
``add_space_prefix`` false and no merges: every printable ASCII character is one token, a space is
stored as U+2581 (SentencePiece's escape, which llama.cpp undoes in ``token_to_piece``), special
tokens are CONTROL so ``parse_special`` finds them in text, and the 256 ``<0xNN>`` byte tokens catch
anything else (llama.cpp aborts on a byte it cannot map, so they are not optional).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = [
    "CHAT_TEMPLATE",
    "BPEVocab",
    "CharVocab",
    "render_chat",
    "write_gguf",
    "write_random_gguf",
    "random_tensors",
    "LLADA_8B_SHAPES",
]

# SentencePiece token types, as llama.cpp reads `tokenizer.ggml.token_type`.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

SPACE_ESCAPE = "\u2581"

# Ids are fixed so the training script, the tests and the files agree without reading each other.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>",  # 0
    "<|bos|>",  # 1
    "<|endoftext|>",  # 2: EOS; this text is also on llama.cpp's end-of-generation list
    "<|mask|>",  # 3
    "<|system|>",  # 4
    "<|user|>",  # 5
    "<|assistant|>",  # 6
    "<|end|>",  # 7: end of turn; llama.cpp marks "<|end|>" as EOT and EOG by its text
)
# Newline, then every printable ASCII character (space included).
CHARACTERS: tuple[str, ...] = ("\n",) + tuple(chr(c) for c in range(32, 127))

# Role tags around each message; the generation prompt opens the assistant turn. dlm adds BOS itself
# (add_bos is true), so the template does not.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def render_chat(messages: list[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """Python twin of CHAT_TEMPLATE (the training script builds its data with it; a test checks both agree)."""
    text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return text + ("<|assistant|>" if add_generation_prompt else "")


@dataclass(frozen=True)
class CharVocab:
    """A character-level vocabulary: special tokens, newline and printable ASCII, 256 byte tokens.

    ``n_vocab`` larger than the natural size pads the table with UNUSED tokens (for random models with
    a real model's vocabulary size, such as LLaDA-8B's 126,464).
    """

    n_vocab: int | None = None
    tokens: tuple[str, ...] = field(init=False)
    token_types: tuple[int, ...] = field(init=False)

    unk_id = 0
    bos_id = 1
    eos_id = 2
    mask_id = 3
    system_id = 4
    user_id = 5
    assistant_id = 6
    end_id = 7
    first_char_id = len(SPECIAL_TOKENS)

    def __post_init__(self) -> None:
        tokens = list(SPECIAL_TOKENS)
        types = [TOKEN_UNKNOWN] + [TOKEN_CONTROL] * (len(SPECIAL_TOKENS) - 1)
        tokens += [c.replace(" ", SPACE_ESCAPE) for c in CHARACTERS]
        types += [TOKEN_NORMAL] * len(CHARACTERS)
        tokens += [f"<0x{b:02X}>" for b in range(256)]
        types += [TOKEN_BYTE] * 256
        natural = len(tokens)
        if self.n_vocab is not None:
            if self.n_vocab < natural:
                raise ValueError(f"n_vocab must be at least {natural}")
            tokens += [f"<|unused_{i}|>" for i in range(natural, self.n_vocab)]
            types += [TOKEN_UNUSED] * (self.n_vocab - natural)
        object.__setattr__(self, "tokens", tuple(tokens))
        object.__setattr__(self, "token_types", tuple(types))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def special_texts(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(SPECIAL_TOKENS)}

    def char_id(self, ch: str) -> int:
        """Id of one character that is in the table (KeyError otherwise)."""
        return _CHAR_IDS[ch]

    def encode(self, text: str, *, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids as llama.cpp's ``llama_tokenize`` gives them for this vocabulary."""
        ids = [self.bos_id] if add_bos else []
        specials = sorted(SPECIAL_TOKENS, key=len, reverse=True) if parse_special else ()
        i = 0
        while i < len(text):
            for s in specials:
                if text.startswith(s, i):
                    ids.append(SPECIAL_TOKENS.index(s))
                    i += len(s)
                    break
            else:
                ch = text[i]
                if ch in _CHAR_IDS:
                    ids.append(_CHAR_IDS[ch])
                else:
                    ids += [self.first_char_id + len(CHARACTERS) + b for b in ch.encode("utf-8")]
                i += 1
        return ids

    def decode(self, ids, *, special: bool = False) -> str:
        """Text of ``ids``; special tokens are left out unless ``special`` (as ``llama_token_to_piece``)."""
        out = bytearray()
        byte0 = self.first_char_id + len(CHARACTERS)
        for t in ids:
            t = int(t)
            if byte0 <= t < byte0 + 256:
                out.append(t - byte0)
            elif self.first_char_id <= t < byte0:
                out += CHARACTERS[t - self.first_char_id].encode()
            elif special or self.token_types[t] not in (TOKEN_CONTROL, TOKEN_UNKNOWN):
                out += self.tokens[t].encode()
        return out.decode("utf-8", errors="replace")


_CHAR_IDS = {c: len(SPECIAL_TOKENS) + i for i, c in enumerate(CHARACTERS)}


@dataclass(frozen=True)
class BPEVocab:
    """A byte-level BPE vocabulary (GPT-2's scheme) as llama.cpp's ``gpt2`` tokenizer reads it.

    ``tokens`` are in GPT-2's byte-to-character form, ``merges`` are "left right" pairs in rank order,
    ``pre`` names llama.cpp's pre-tokenizer (``tokenizer.ggml.pre``; "gpt-2" is GPT-2's own regex).
    The first ``n_special`` tokens are CONTROL tokens; they include BOS, EOS and the mask.
    """

    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    pre: str
    bos_id: int
    eos_id: int
    mask_id: int
    n_special: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def token_types(self) -> tuple[int, ...]:
        return (TOKEN_CONTROL,) * self.n_special + (TOKEN_NORMAL,) * (len(self.tokens) - self.n_special)

# Per-arch facts llama.cpp needs: q/k/v biases (qwen2 family), rope type is implied by the arch.
_ARCHS = {
    "llada": {"qkv_bias": False, "diffusion": True},
    "dream": {"qkv_bias": True, "diffusion": True},
    "llama": {"qkv_bias": False, "diffusion": False},
    "qwen2": {"qkv_bias": True, "diffusion": False},
}

_DTYPES = {"f32": np.float32, "f16": np.float16}


def _qtype(dtype: str):
    import gguf

    name = dtype.lower()
    if name in _DTYPES:
        return None
    try:
        return gguf.GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use f32, f16, bf16 or q8_0") from None


def _add_kv(w, key: str, value: Any) -> None:
    import gguf

    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], gguf.GGUFValueType):
        w.add_key_value(key, value[0], value[1])
    elif isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, (int, np.integer)):
        (w.add_uint32 if value >= 0 else w.add_int32)(key, int(value))
    elif isinstance(value, (float, np.floating)):
        w.add_float32(key, float(value))
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, (list, tuple)):
        w.add_array(key, list(value))
    else:
        raise TypeError(f"cannot write {key}={value!r} to GGUF")


def write_gguf(
    path: str | os.PathLike,
    *,
    arch: str,
    tensors: Mapping[str, np.ndarray],
    n_head: int,
    context_length: int,
    n_head_kv: int | None = None,
    rms_eps: float = 1e-5,
    rope_theta: float = 10000.0,
    vocab: CharVocab | BPEVocab | None = None,
    mask_token: bool = True,
    shift_logits: bool | None = None,
    chat_template: str | None = None,
    add_bos: bool = True,
    name: str | None = None,
    dtype: str = "f16",
    extra_kv: Mapping[str, Any] | None = None,
) -> None:
    """Write a GGUF that llama.cpp loads as ``arch``.

    ``tensors`` maps GGUF tensor names (``token_embd.weight``, ``blk.0.attn_q.weight``, ...) to arrays in
    PyTorch ``nn.Linear`` layout (out, in). Matrices are stored as ``dtype`` (f32, f16, bf16, q8_0;
    an array already float16 stays so); vectors (norms, biases) are always F32. Sizes are read from
    the tensors; ``n_head`` and ``context_length`` cannot be. ``shift_logits=None`` leaves the
    ``diffusion.shift_logits`` key out. ``extra_kv`` values are typed by Python type (bool, int -> u32,
    float -> f32, str, list) or given as ``(value, gguf.GGUFValueType)``.
    """
    import gguf

    vocab = vocab if vocab is not None else CharVocab()
    emb = tensors["token_embd.weight"]
    n_vocab, n_embd = emb.shape
    if n_vocab != len(vocab):
        raise ValueError(f"token_embd has {n_vocab} rows but the vocabulary has {len(vocab)} tokens")
    n_layer = len({k.split(".")[1] for k in tensors if k.startswith("blk.")})
    n_ff = tensors["blk.0.ffn_up.weight"].shape[0]
    qtype = _qtype(dtype)

    w = gguf.GGUFWriter(os.fspath(path), arch)
    w.add_name(name or f"random-{arch}")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv or n_head)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_rope_freq_base(rope_theta)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
                    if dtype == "f32" else gguf.LlamaFileType.GUESSED)

    if isinstance(vocab, BPEVocab):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab.pre)
        w.add_token_list(list(vocab.tokens))
        w.add_token_types(list(vocab.token_types))
        w.add_token_merges(list(vocab.merges))
        w.add_bos_token_id(vocab.bos_id)
        w.add_eos_token_id(vocab.eos_id)
    else:
        w.add_tokenizer_model("llama")
        w.add_token_list(list(vocab.tokens))
        w.add_token_scores([0.0] * n_vocab)
        w.add_token_types(list(vocab.token_types))
        w.add_add_space_prefix(False)
        w.add_bos_token_id(vocab.bos_id)
        w.add_eos_token_id(vocab.eos_id)
        w.add_eot_token_id(vocab.end_id)
        w.add_unk_token_id(vocab.unk_id)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    if mask_token:
        w.add_mask_token_id(vocab.mask_id)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if shift_logits is not None:
        w.add_bool(gguf.Keys.Diffusion.SHIFT_LOGITS, shift_logits)
    for key, value in (extra_kv or {}).items():
        _add_kv(w, key, value)

    quant_cache: dict[int, np.ndarray] = {}
    for tname, arr in tensors.items():
        if arr.ndim == 1:
            w.add_tensor(tname, np.ascontiguousarray(arr, dtype=np.float32))
        elif qtype is None:
            target = np.float16 if arr.dtype == np.float16 else _DTYPES[dtype.lower()]
            w.add_tensor(tname, np.ascontiguousarray(arr, dtype=target))
        else:
            # Quantize each distinct array once: a random 8B-shaped model reuses one array per shape.
            q = quant_cache.get(id(arr))
            if q is None:
                q = quant_cache[id(arr)] = gguf.quants.quantize(np.asarray(arr, dtype=np.float32), qtype)
            w.add_tensor(tname, q, raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@dataclass(frozen=True)
class Shapes:
    n_layer: int
    n_embd: int
    n_head: int
    n_ff: int
    n_head_kv: int | None = None


# LLaDA-8B-Instruct's sizes, for benchmark models with its cost per forward pass.
LLADA_8B_SHAPES = Shapes(n_layer=32, n_embd=4096, n_head=32, n_ff=12288)
LLADA_8B_VOCAB = 126464


def random_tensors(
    arch: str,
    *,
    n_vocab: int,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_ff: int,
    n_head_kv: int | None = None,
    seed: int = 0,
    std: float = 0.02,
    share: bool = False,
    tie_embeddings: bool = False,
) -> dict[str, np.ndarray]:
    """Random weights under GGUF names. ``share`` draws one array per shape and reuses it (fast for big shapes)."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown arch {arch!r}: use one of {sorted(_ARCHS)}")
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    n_kv = (n_head_kv or n_head) * head_dim
    cache: dict[tuple, np.ndarray] = {}

    def rand(*shape: int) -> np.ndarray:
        if share and shape in cache:
            return cache[shape]
        if share:
            # One draw per shape, stored f16 and made in row chunks so an 8B-shaped model needs ~1.3 GB.
            a = np.empty(shape, np.float16)
            flat = a.reshape(shape[0], -1)
            for r in range(0, shape[0], 4096):
                rows = flat[r : r + 4096]
                rows[...] = rng.standard_normal(rows.shape, dtype=np.float32) * std
        else:
            a = rng.standard_normal(shape, dtype=np.float32) * std
        if share:
            cache[shape] = a
        return a

    t: dict[str, np.ndarray] = {"token_embd.weight": rand(n_vocab, n_embd)}
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        t[p + "attn_q.weight"] = rand(n_embd, n_embd)
        t[p + "attn_k.weight"] = rand(n_kv, n_embd)
        t[p + "attn_v.weight"] = rand(n_kv, n_embd)
        if _ARCHS[arch]["qkv_bias"]:
            t[p + "attn_q.bias"] = rand(n_embd)
            t[p + "attn_k.bias"] = rand(n_kv)
            t[p + "attn_v.bias"] = rand(n_kv)
        t[p + "attn_output.weight"] = rand(n_embd, n_embd)
        t[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        t[p + "ffn_gate.weight"] = rand(n_ff, n_embd)
        t[p + "ffn_up.weight"] = rand(n_ff, n_embd)
        t[p + "ffn_down.weight"] = rand(n_embd, n_ff)
    t["output_norm.weight"] = np.ones(n_embd, np.float32)
    if not tie_embeddings:
        t["output.weight"] = rand(n_vocab, n_embd)
    return t


def write_random_gguf(
    path: str | os.PathLike,
    arch: str = "llada",
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 128,
    n_vocab: int | None = None,
    context_length: int = 256,
    mask_token: bool = True,
    shift_logits: bool | None | str = "default",
    chat_template: str | None = CHAT_TEMPLATE,
    dtype: str = "f32",
    std: float = 0.02,
    extra_kv: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """A tiny random-weight model in seconds; returns the path.

    ``shift_logits="default"`` writes what the converters write (false for llada, true for dream, absent
    for autoregressive archs); pass True/False/None to override (None: key absent). ``n_vocab`` pads the
    character vocabulary (e.g. 126464 for LLaDA-8B's shape).
    """
    if shift_logits == "default":
        shift_logits = {"llada": False, "dream": True}.get(arch)
    vocab = CharVocab(n_vocab=n_vocab)
    big = n_embd * n_ff * n_layer > 1 << 24
    tensors = random_tensors(
        arch, n_vocab=len(vocab), n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_ff=n_ff,
        n_head_kv=n_head_kv, seed=seed, std=std, share=big,
    )
    write_gguf(
        path, arch=arch, tensors=tensors, n_head=n_head, n_head_kv=n_head_kv, context_length=context_length,
        vocab=vocab, mask_token=mask_token, shift_logits=shift_logits, chat_template=chat_template,
        dtype=dtype, extra_kv=extra_kv, name=name,
    )
    return os.fspath(path)

