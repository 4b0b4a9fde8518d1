"""Reading GGUF metadata without loading weights (`dlm info`)."""

from __future__ import annotations

import json
import time

import gguf
import numpy as np
import pytest

from dlmcli.errors import ModelError
from dlmcli.hub.ggufinfo import read_info

from .ggufs import make_gguf


def test_llada_fields(tmp_path):
    info = read_info(make_gguf(tmp_path / "m.gguf", payload=4096, mask_id=90))
    assert info.architecture == "llada" and info.name == "Test llada"
    assert info.quant == "Q4_K_M" and info.context_length == 4096 and info.block_count == 2
    assert info.parameters == 2 * 512  # two tensors of 4096/8 elements
    assert (info.mask_token_id, info.mask_token) == (90, "<|mdm_mask|>")
    assert info.shift_logits is False and info.causal_attention is False and info.chat_template is True
    assert (info.vocab_size, info.bos_token_id, info.eos_token_id) == (96, 1, 2)


def test_dream_moe_and_no_template(tmp_path):
    info = read_info(make_gguf(tmp_path / "d.gguf", arch="dream", chat=False, file_type=7))
    assert (info.architecture, info.quant, info.shift_logits, info.chat_template) == ("dream", "Q8_0", True, False)
    moe = read_info(make_gguf(tmp_path / "e.gguf", arch="llada-moe"))
    assert (moe.expert_count, moe.expert_used_count) == (8, 2)


def test_quant_from_tensors_when_file_type_is_missing(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llada")
    w.add_tensor("a.weight", np.zeros((4, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert read_info(tmp_path / "x.gguf").quant == "F16"


def test_big_vocab_is_skipped_not_read(tmp_path):
    # LLaDA's vocab is 126k tokens and its mask token sits near the end; GGUFReader takes seconds here.
    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "llada")
    tokens = [f"tok{i}" for i in range(150_000)]
    tokens[126_336] = "<|mdm_mask|>"
    w.add_token_list(tokens)
    w.add_uint32("tokenizer.ggml.mask_token_id", 126_336)
    w.add_tensor("a.weight", np.zeros((2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    t = time.perf_counter()
    info = read_info(tmp_path / "v.gguf")
    assert time.perf_counter() - t < 1.0
    assert (info.vocab_size, info.mask_token) == (150_000, "<|mdm_mask|>")


def test_shards_are_counted_together(tmp_path):
    for i in (1, 2, 3):
        make_gguf(tmp_path / f"M-0000{i}-of-00003.gguf", split=(i, 3), payload=1024, seed=i)
    info = read_info(tmp_path / "M-00001-of-00003.gguf")
    assert len(info.files) == 3 and info.parameters == 3 * 2 * 128 and info.tensors == 6
    (tmp_path / "M-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelError, match="is shard 1 of 3 but M-00003-of-00003.gguf is missing"):
        read_info(tmp_path / "M-00001-of-00003.gguf")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a gguf", b"GGUF\x03\x00\x00\x00\x05"])
def test_not_gguf(tmp_path, content):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(ModelError, match="bad.gguf"):
        read_info(p)


def test_truncated(tmp_path):
    p = make_gguf(tmp_path / "t.gguf")
    data = p.read_bytes()
    p.write_bytes(data[:200])
    with pytest.raises(ModelError, match="truncated"):
        read_info(p)


def test_info_command_on_a_path(tmp_path, cli):
    p = make_gguf(tmp_path / "m.gguf", arch="dream", mask_id=80)
    r = cli("info", str(p))
    assert r.exit_code == 0, r.all
    assert "architecture      dream" in r.stdout and "mask token        80 '<|mdm_mask|>'" in r.stdout
    assert "chat template     yes" in r.stdout and "shift logits      yes" in r.stdout
    data = json.loads(cli("info", str(p), "--json").stdout)
    assert data["architecture"] == "dream" and data["catalog"] is None and data["parameters"] > 0
    r = cli("info", str(tmp_path / "nope.gguf"))
    assert r.exit_code == 1 and "Error: model file not found" in r.stderr
