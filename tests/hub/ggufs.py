"""Small GGUFs with the metadata of real diffusion models (not loadable by llama.cpp: random tensors)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

LLADA_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_gguf(
    path: Path,
    *,
    arch: str = "llada",
    payload: int = 64 * 1024,
    vocab: int = 96,
    mask_id: int = 90,
    file_type: int = 15,  # Q4_K_M
    chat: bool = True,
    seed: int = 0,
    split: tuple[int, int] | None = None,  # (shard number from 1, shard count)
    n_layers: int = 2,
) -> Path:
    """Write a GGUF whose tensors hold about ``payload`` random bytes. Returns the path."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    if split is None or split[0] == 1:
        w.add_name(f"Test {arch}")
        w.add_file_type(file_type)
        w.add_context_length(4096 if arch != "dream" else 2048)
        w.add_block_count(n_layers)
        w.add_embedding_length(32)
        w.add_head_count(4)
        w.add_causal_attention(False)
        if arch in ("llada-moe", "rnd1"):
            w.add_expert_count(8)
            w.add_expert_used_count(2)
        w.add_tokenizer_model("gpt2")
        tokens = [f"t{i}" for i in range(vocab)]
        tokens[mask_id] = "<|mdm_mask|>"
        w.add_token_list(tokens)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_uint32("tokenizer.ggml.mask_token_id", mask_id)
        w.add_bool("diffusion.shift_logits", arch in ("dream", "rnd1"))
        w.add_string("general.license", "mit")
        if chat:
            w.add_chat_template(CHATML if arch == "dream" else LLADA_TEMPLATE)
    if split is not None:
        w.add_uint16("split.no", split[0] - 1)
        w.add_uint16("split.count", split[1])
        w.add_int32("split.tensors.count", 2 * split[1])
    n = max(1, payload // 8)
    w.add_tensor(f"blk.{(split or (1, 1))[0] - 1}.a.weight", rng.standard_normal((n // 16, 16)).astype(np.float32))
    w.add_tensor(f"blk.{(split or (1, 1))[0] - 1}.b.weight", rng.standard_normal((n // 16, 16)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_bytes(tmp: Path, name: str, **kw) -> bytes:
    path = make_gguf(tmp / name, **kw)
    return path.read_bytes()
