"""Train, export and check the two bundled tiny diffusion models (tiny-llada, tiny-dream).

    python scripts/train_tiny.py train --out out/tiny        # GPU: both models side by side, ~6.5 min on one H100
    python scripts/train_tiny.py check --out out/tiny        # CPU: parity with llama.cpp, accuracy via llama.cpp

``train`` trains each model from scratch with the masked-diffusion objective, measures decoding
accuracy in PyTorch, and exports ``tiny-<arch>.gguf`` (needs torch, numpy and the gguf package).
``check`` loads each GGUF with llama.cpp (llama-cpp-python), compares its logits with this file's
PyTorch model fed the exported weights, and measures accuracy again through llama.cpp's logits with
the decoding dlm uses. Everything is seeded.

Tasks, in the exact token layout dlm builds (see tools/ggufgen.py for the tokenizer and template):
  chat:  [BOS] <|user|>reverse hello<|end|><|assistant|>  olleh + EOS padding (16 positions)
  raw:   [BOS] reverse hello = olleh      and      [BOS] add 12 34 = 46   (masked anywhere)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tools.ggufgen import CHAT_TEMPLATE, CharVocab, render_chat  # noqa: E402

VOCAB = CharVocab()
V = len(VOCAB)
BOS, EOS, MASK, END = VOCAB.bos_id, VOCAB.eos_id, VOCAB.mask_id, VOCAB.end_id
GEN = 16  # default generated region (dlm.gen_length)
CTX = 96  # context length written to the GGUF; every training sequence fits in it
SYSTEM_PROMPTS = ["You are a helpful assistant.", "Be brief.", "Answer exactly.", "You are tiny.",
                  "Reply with the answer only.", "hi"]


@dataclass(frozen=True)
class ModelCfg:
    arch: str  # "llada": interleaved RoPE, no biases, unshifted; "dream": NeoX RoPE, q/k/v biases, shifted
    n_layer: int = 6
    n_embd: int = 192
    n_head: int = 6
    n_ff: int = 512
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def shift(self) -> bool:
        return self.arch == "dream"


@dataclass(frozen=True)
class TrainCfg:
    steps: int = 4000  # the published run: llada 4000, dream 3500 (see STEPS)
    batch: int = 1024
    lr: float = 2e-3
    warmup: int = 300
    weight_decay: float = 0.1
    seed: int = 0
    workers: int = 6


# ----------------------------------------------------------------------------------------------
# Data: every sample is a whole canvas as dlm lays it out, plus which positions get masked.


def held_out(kind: str, a, b=None) -> bool:
    """About 1% of words and of sum pairs never appear in training, to measure generalisation."""
    key = f"{a}" if kind == "reverse" else f"{a},{b}"
    return zlib.crc32(f"{kind}:{key}".encode()) % 100 == 0


def draw_operand(rng: np.random.Generator, balanced: bool) -> int:
    """0..999; ``balanced`` draws the digit count first half the time (short operands are rare otherwise)."""
    if balanced and rng.random() < 0.5:
        d = int(rng.integers(1, 4))
        return int(rng.integers(0 if d == 1 else 10 ** (d - 1), 10**d))
    return int(rng.integers(0, 1000))


def draw_task(rng: np.random.Generator, kind: str, *, want_held_out: bool | None = False, train: bool = False):
    """(kind, question text, answer text, word-or-operands text); eval draws are uniform as the issue states."""
    while True:
        if kind == "reverse":
            n = int(rng.integers(3, 13))
            w = "".join(chr(97 + c) for c in rng.integers(0, 26, n))
            item = ("reverse", f"reverse {w}", w[::-1], w)
            ho = held_out("reverse", w)
        else:
            a, b = draw_operand(rng, train), draw_operand(rng, train)
            item = ("add", f"add {a} {b}", str(a + b), f"{a} {b}")
            ho = held_out("add", a, b)
        if want_held_out is None or ho == want_held_out:
            return item


def chat_prompt_ids(question: str, system: str | None = None) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return VOCAB.encode(render_chat(msgs, add_generation_prompt=True))


def make_sample(rng: np.random.Generator):
    """One training canvas: (tokens, maskable, forced). Masked = forced | (maskable & u < t)."""
    kind, q, ans, operand = draw_task(rng, "reverse" if rng.random() < 0.5 else "add", train=True)
    if rng.random() < 0.5:  # chat turn, SFT style: only the generated region is ever masked
        system = SYSTEM_PROMPTS[rng.integers(len(SYSTEM_PROMPTS))] if rng.random() < 0.05 else None
        prompt = chat_prompt_ids(q, system)
        region = GEN if rng.random() < 0.75 else int(rng.integers(len(ans) + 1, 33))
        gen = [VOCAB.char_id(c) for c in ans] + [EOS] * (region - len(ans))
        toks = prompt + gen
        maskable = [False] * len(prompt) + [True] * region
        forced = [False] * len(toks)
        if rng.random() < 0.3:  # semi-autoregressive states: everything after a cut still masked
            cut = len(prompt) + int(rng.integers(0, region + 1))
            forced[cut:] = [True] * (len(toks) - cut)
        return toks, maskable, forced
    # raw line "reverse W = R" / "add A B = S", LLaDA pre-training style
    line = f"{q} = {ans}"
    ids = VOCAB.encode(line)  # starts with BOS
    n = len(ids)
    r = rng.random()
    if r < 0.3 or (r < 0.45 and kind == "add"):  # infill the answer: [BOS] line, nothing after
        maskable = [False] * (n - len(ans)) + [True] * len(ans)
        return ids, maskable, [False] * n
    if r < 0.45:  # infill the word from its reversal (the operands of a sum are not determined by it)
        start = 1 + len("reverse ")
        maskable = [False] * n
        maskable[start:start + len(operand)] = [True] * len(operand)
        return ids, maskable, [False] * n
    if r < 0.8:  # continuation: a prompt cut anywhere, then GEN positions (rest of line + EOS padding)
        cut = int(rng.integers(2, n + 1))
        rest = n - cut
        region = max(rest, GEN if rng.random() < 0.8 else int(rng.integers(max(1, rest), max(rest, 32) + 1)))
        toks = ids + [EOS] * (cut + region - n)
        return toks, [False] * cut + [True] * region, [False] * len(toks)
    # anywhere in the line and some EOS padding
    toks = ids + [EOS] * int(rng.integers(0, GEN + 1))
    return toks, [False] + [True] * (len(toks) - 1), [False] * len(toks)


def make_batch(seed: int, size: int):
    """A padded batch as numpy arrays; a pure function of ``seed`` (workers stay reproducible)."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng) for _ in range(size)]
    L = max(len(s[0]) for s in samples)
    assert L <= CTX
    tok = np.full((size, L), EOS, np.int64)
    valid = np.zeros((size, L), bool)
    masked = np.zeros((size, L), bool)
    t = rng.uniform(0.0, 1.0, size)
    for i, (toks, maskable, forced) in enumerate(samples):
        n = len(toks)
        tok[i, :n] = toks
        valid[i, :n] = True
        mk = np.asarray(maskable)
        m = np.asarray(forced) | (mk & (rng.random(n) < t[i]))
        if not m.any():
            m[rng.choice(np.flatnonzero(mk))] = True
        masked[i, :n] = m
    return tok, valid, masked


# ----------------------------------------------------------------------------------------------
# The model: exactly llama.cpp's llada / dream graph (RMSNorm, RoPE, bidirectional attention, SwiGLU).


def build_model(cfg: ModelCfg, n_vocab: int = V, n_ctx: int = CTX):
    """``n_vocab`` and ``n_ctx`` default to the two tiny models' (tiny-code has its own)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    hd = cfg.n_embd // cfg.n_head

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + cfg.rms_eps)).to(x.dtype) * self.weight

    def rope(x, cos, sin):
        # x: [B, H, L, hd]. llada: ggml "normal" RoPE rotates pairs (2i, 2i+1); dream: NeoX pairs (i, i + hd/2).
        if cfg.arch == "llada":
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            bias = cfg.arch == "dream"
            self.attn_norm = RMSNorm(cfg.n_embd)
            self.q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias)
            self.k = nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias)
            self.v = nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias)
            self.o = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
            self.ffn_norm = RMSNorm(cfg.n_embd)
            self.gate = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
            self.up = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
            self.down = nn.Linear(cfg.n_ff, cfg.n_embd, bias=False)

        def forward(self, x, cos, sin, attn_mask):
            B, L, _ = x.shape
            h = self.attn_norm(x)
            q, k, v = (m(h).view(B, L, cfg.n_head, hd).transpose(1, 2) for m in (self.q, self.k, self.v))
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # bidirectional
            x = x + self.o(a.transpose(1, 2).reshape(B, L, cfg.n_embd))
            h = self.ffn_norm(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = cfg
            self.embed = nn.Embedding(n_vocab, cfg.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.norm = RMSNorm(cfg.n_embd)
            self.out = nn.Linear(cfg.n_embd, n_vocab, bias=False)
            inv = cfg.rope_theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            ang = torch.arange(n_ctx, dtype=torch.float64)[:, None] * inv[None]
            self.register_buffer("cos", ang.cos().float(), persistent=False)
            self.register_buffer("sin", ang.sin().float(), persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("o.weight", "down.weight")) else 0.02
                    nn.init.normal_(p, std=std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, tok, valid=None):
            """Logits [B, L, V]; ``valid`` [B, L] hides padding keys (llama.cpp sees no padding at all)."""
            L = tok.shape[1]
            cos, sin = self.cos[:L], self.sin[:L]
            mask = None if valid is None else valid[:, None, None, :]
            x = self.embed(tok)
            for b in self.blocks:
                x = b(x, cos, sin, mask)
            return self.out(self.norm(x))

    return Model()


_LAYER_NAMES = {"attn_norm.weight": "attn_norm.weight", "q.weight": "attn_q.weight", "k.weight": "attn_k.weight",
                "v.weight": "attn_v.weight", "q.bias": "attn_q.bias", "k.bias": "attn_k.bias",
                "v.bias": "attn_v.bias", "o.weight": "attn_output.weight", "ffn_norm.weight": "ffn_norm.weight",
                "gate.weight": "ffn_gate.weight", "up.weight": "ffn_up.weight", "down.weight": "ffn_down.weight"}


def gguf_name(ours: str) -> str:
    """llama.cpp's tensor name for one of this model's state-dict keys."""
    top = {"embed.weight": "token_embd.weight", "norm.weight": "output_norm.weight", "out.weight": "output.weight"}
    if ours in top:
        return top[ours]
    _, i, rest = ours.split(".", 2)
    return f"blk.{i}.{_LAYER_NAMES[rest]}"


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """PyTorch weights under llama.cpp's tensor names (nn.Linear's (out, in) layout is GGUF's too)."""
    return {gguf_name(k): v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}


def load_gguf_into(model, path: str) -> None:
    """Load a GGUF's (f16) weights back into the PyTorch model, as float32."""
    import torch
    from gguf import GGUFReader

    r = GGUFReader(path)
    by_name = {t.name: np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
               for t in r.tensors}
    model.load_state_dict({k: torch.from_numpy(by_name[gguf_name(k)].copy()) for k in model.state_dict()})


# ----------------------------------------------------------------------------------------------
# Decoding, as dlm does it (for measuring accuracy). ``logits_fn(canvas) -> [B, L, V]`` unshifted
# per position: the Dream shift is applied here, as dlm applies it.


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def llada_decode(logits_fn, canvas: np.ndarray, start: int, gen: int, steps: int, block: int) -> np.ndarray:
    """LLaDA low-confidence remasking, temperature 0, block schedule over the generated region."""
    x = canvas.copy()
    n_blocks = gen // block
    per_block = steps // n_blocks
    for b in range(n_blocks):
        lo, hi = start + b * block, start + (b + 1) * block
        n_mask = (x[:, lo:hi] == MASK).sum(1)
        base, rem = n_mask // per_block, n_mask % per_block
        for s in range(per_block):
            k = base + (s < rem)
            lg = logits_fn(x)
            p = softmax(lg.astype(np.float64))
            x0 = p.argmax(-1)
            conf = np.take_along_axis(p, x0[..., None], -1)[..., 0]
            conf[:, hi:] = -np.inf
            conf[:, :lo] = -np.inf
            conf[x != MASK] = -np.inf
            for i in range(x.shape[0]):
                if k[i] > 0:
                    sel = np.argsort(-conf[i], kind="stable")[: k[i]]
                    x[i, sel] = x0[i, sel]
    return x


def dream_decode(logits_fn, canvas: np.ndarray, start: int, gen: int, steps: int, rng: np.random.Generator,
                 temperature: float = 0.2, top_p: float = 0.95, eps: float = 1e-3) -> np.ndarray:
    """Dream timestep schedule, entropy confidence, temperature + top-p sampling, shifted logits."""
    x = canvas.copy()
    ts = np.linspace(1, eps, steps + 1)
    for i in range(steps):
        lg = logits_fn(x).astype(np.float64)
        lg = np.concatenate([lg[:, :1], lg[:, :-1]], axis=1)  # position j is predicted by output j-1
        for r in range(x.shape[0]):
            pos = np.flatnonzero(x[r] == MASK)
            if len(pos) == 0:
                continue
            z = lg[r, pos] / temperature if temperature > 0 else lg[r, pos]
            p = softmax(z)
            if top_p < 1:
                order = np.argsort(-p, -1, kind="stable")
                ps = np.take_along_axis(p, order, -1)
                cum = np.cumsum(ps, -1)
                drop = cum - ps > top_p  # keep the smallest prefix whose mass reaches top_p
                ps[drop] = 0
                p = np.zeros_like(p)
                np.put_along_axis(p, order, ps, -1)
                p /= p.sum(-1, keepdims=True)
            if temperature > 0:
                u = rng.random((len(pos), 1))
                x0 = (np.cumsum(p, -1) < u).sum(-1).clip(0, p.shape[1] - 1)
            else:
                x0 = p.argmax(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                conf = np.where(p > 0, p * np.log(p), 0).sum(-1)
            t, s = ts[i], ts[i + 1]
            k = len(pos) if i == steps - 1 else int(len(pos) * (1 - s / t))
            if k > 0:
                sel = np.argsort(-conf, kind="stable")[:k]
                x[r, pos[sel]] = x0[sel]
    return x


def answer_text(row: np.ndarray, start: int) -> str:
    """Generated text up to the first end-of-generation token (EOS or <|end|>), as dlm prints it."""
    out = []
    for t in row[start:]:
        if t in (EOS, END):
            break
        out.append(int(t))
    return VOCAB.decode(out)


def eval_prompts(seed: int, n: int, held: bool | None = None):
    rng = np.random.default_rng(seed)
    return {k: [draw_task(rng, k, want_held_out=held) for _ in range(n)] for k in ("reverse", "add")}


def build_canvases(items, mode: str):
    """Canvases for one eval mode: chat (prompt + GEN masks), raw-answer / raw-word infill."""
    rows, starts, answers = [], [], []
    for _kind, q, ans, operand in items:
        if mode == "chat":
            p = chat_prompt_ids(q)
            rows.append(p + [MASK] * GEN)
            starts.append(len(p))
            answers.append(ans)
        elif mode == "infill_answer":
            p = VOCAB.encode(f"{q} = ")
            rows.append(p + [MASK] * len(ans))
            starts.append(len(p))
            answers.append(ans)
        elif mode == "infill_word":  # reverse only: the word from its reversal
            pre = VOCAB.encode("reverse ")
            rows.append(pre + [MASK] * len(operand) + VOCAB.encode(f" = {ans}", add_bos=False))
            starts.append(len(pre))
            answers.append(operand)
        elif mode == "raw":
            p = VOCAB.encode(f"{q} =")
            rows.append(p + [MASK] * GEN)
            starts.append(len(p))
            answers.append(" " + ans)
    return rows, starts, answers


def accuracy(logits_fn_for_len, arch: str, items, mode: str, steps: int, seed: int = 0, block: int = 8) -> float:
    """Exact-match rate; canvases of equal length are decoded together."""
    rows, starts, answers = build_canvases(items, mode)
    rng = np.random.default_rng(seed)
    ok = 0
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (r, s) in enumerate(zip(rows, starts)):
        groups.setdefault((len(r), s), []).append(i)
    for (L, s), idx in groups.items():
        canvas = np.array([rows[i] for i in idx])
        gen = L - s
        if mode == "infill_word":
            gen = len(answers[idx[0]])
        fn = logits_fn_for_len
        if arch == "llada":
            blk = block if (mode in ("chat", "raw") and gen % block == 0 and steps % (gen // block) == 0) else gen
            st = steps if mode in ("chat", "raw") else min(steps, gen)
            if st % (gen // blk):
                st = gen // blk
            out = llada_decode(fn, canvas, s, gen, st, blk)
        else:
            st = steps if mode in ("chat", "raw") else min(steps, gen)
            out = dream_decode(fn, canvas, s, gen, st, rng)
        for j, i in enumerate(idx):
            got = answer_text(out[j], s) if mode in ("chat", "raw") else VOCAB.decode(out[j, s:s + len(answers[i])])
            ok += got == answers[i]
    return ok / len(rows)


# ----------------------------------------------------------------------------------------------
# Training (GPU)


def _batches(tcfg: TrainCfg, arch_salt: int):
    """Batches in step order from worker processes; batch i depends only on (seed, arch, i)."""
    import multiprocessing as mp

    seeds = (tcfg.seed * 1_000_003 + arch_salt * 7919 + i for i in range(tcfg.steps))
    ctx = mp.get_context("fork")
    with ctx.Pool(tcfg.workers) as pool:
        yield from pool.imap(_make_batch_default, seeds, chunksize=8)


def _make_batch_default(seed):
    return make_batch(seed, _BATCH)


_BATCH = 512


def train_one(arch: str, out: str | None, tcfg: TrainCfg, log, timing=None) -> dict:
    import torch
    import torch.nn.functional as F

    global _BATCH
    _BATCH = tcfg.batch
    torch.manual_seed(tcfg.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = ModelCfg(arch)
    model = build_model(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr, betas=(0.9, 0.98),
                            fused=dev == "cuda")

    def lr_at(step):
        if step < tcfg.warmup:
            return tcfg.lr * (step + 1) / tcfg.warmup
        frac = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        return tcfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    log(f"[{arch}] {n_params/1e6:.2f}M params, cfg {asdict(cfg)}, train {asdict(tcfg)}, device {dev}")
    t0 = time.time()
    model.train()
    for step, (tok, valid, masked) in enumerate(_batches(tcfg, 1 if arch == "llada" else 2)):
        if timing is not None and step == timing[0]:
            if dev == "cuda":
                torch.cuda.synchronize()
            t_mark = time.time()
        tok = torch.from_numpy(tok).to(dev, non_blocking=True)
        valid = torch.from_numpy(valid).to(dev, non_blocking=True)
        masked = torch.from_numpy(masked).to(dev, non_blocking=True)
        inp = torch.where(masked, MASK, tok)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            logits = model(inp, valid)
        if cfg.shift:  # Dream: the output at i-1 predicts token i
            logits, target, m = logits[:, :-1], tok[:, 1:], masked[:, 1:]
        else:
            target, m = tok, masked
        loss = F.cross_entropy(logits[m].float(), target[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == tcfg.steps - 1:
            log(f"[{arch}] step {step:5d} loss {loss.item():.4f} lr {lr_at(step):.2e} {time.time() - t0:6.1f}s")
    if dev == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    if timing is not None:
        _LAST_TIMING[0] = (time.time() - t_mark) / (tcfg.steps - timing[0])
        return {}
    log(f"[{arch}] trained in {train_s:.1f}s")
    model.eval()
    torch.save({"cfg": asdict(cfg), "train": asdict(tcfg), "state": model.state_dict()},
               os.path.join(out, f"tiny-{arch}.pt"))
    return {"model": model, "params": n_params, "train_seconds": round(train_s, 1), "device": dev}


def torch_logits_fn(model):
    import torch

    dev = next(model.parameters()).device

    @torch.no_grad()
    def fn(canvas: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(canvas).to(dev)).float().cpu().numpy()

    return fn


def export(model, arch: str, path: str, dtype: str = "f16") -> None:
    from tools.ggufgen import write_gguf

    cfg = model.cfg
    extra = {"dlm.gen_length": GEN, "dlm.steps": 16, "general.description":
             f"tiny-{arch}: a {arch} masked-diffusion model trained from scratch by dlm's scripts/train_tiny.py "
             "on two tasks: 'reverse WORD' and 'add A B' (chat turns and raw lines)."}
    if arch == "llada":
        extra["dlm.block_length"] = 8
    write_gguf(path, arch=arch, tensors=gguf_tensors(model), n_head=cfg.n_head, context_length=CTX,
               rms_eps=cfg.rms_eps, rope_theta=cfg.rope_theta, vocab=VOCAB, mask_token=True,
               shift_logits=cfg.shift, chat_template=CHAT_TEMPLATE, name=f"tiny-{arch}", dtype=dtype,
               extra_kv=extra)


# Step counts of the published run (chosen once by --auto-seconds 360 on an H100, both models at once).
STEPS = {"llada": 4000, "dream": 3500}

EVAL_STEPS = (2, 4, 8, 16)
EVAL_MODES = ("chat", "raw", "infill_answer", "infill_word")


def eval_table(logits_fn, arch: str, n: int, seed: int, steps_list=EVAL_STEPS, modes=EVAL_MODES, held=None):
    prompts = eval_prompts(seed, n, held)
    res = {}
    for mode in modes:
        for kind, items in prompts.items():
            if mode == "infill_word" and kind != "reverse":
                continue
            for st in steps_list:
                res[f"{mode}/{kind}/steps={st}"] = accuracy(logits_fn, arch, items, mode, st, seed=seed + st)
    return res


def pick_steps(arch: str, batch: int, seconds: float, workers: int, log) -> int:
    """Time 120 steps of a throwaway model and return the step count (a multiple of 500) that fits ``seconds``.

    Used once on new hardware; the chosen count is logged, and ``--steps N`` repeats the run exactly.
    """
    probe = TrainCfg(steps=120, batch=batch, seed=99, workers=workers)
    t0 = time.time()
    train_one(arch, None, probe, lambda m: None, timing=(20, t0))
    per_step = _LAST_TIMING[0]
    steps = max(500, int(seconds / per_step) // 500 * 500)
    log(f"[{arch}] timing probe: {per_step * 1000:.1f} ms/step -> --steps {steps} for {seconds:.0f}s")
    return steps


_LAST_TIMING = [0.0]


def cmd_train(args) -> None:
    os.makedirs(args.out, exist_ok=True)
    if len(args.arch) > 1 and not args.sequential:
        # One process per model, side by side on the one GPU (as the published run was made).
        import subprocess

        t0 = time.time()
        argv = [a for a in sys.argv[1:] if a not in args.arch and a != "--arch"]
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv, "--arch", a]) for a in args.arch]
        codes = [p.wait() for p in procs]
        print(f"both models done in {time.time() - t0:.0f}s; logs in {args.out}/train-<arch>.log", flush=True)
        if any(codes):
            sys.exit(1)
        return
    logf = open(os.path.join(args.out, f"train-{'-'.join(args.arch)}.log"), "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    import torch

    steps = args.steps or STEPS[args.arch[0]]
    if args.auto_seconds:
        steps = pick_steps(args.arch[0], args.batch, args.auto_seconds, args.workers, log)
    tcfg = TrainCfg(steps=steps, batch=args.batch, seed=args.seed, workers=args.workers)
    for arch in args.arch:
        r = train_one(arch, args.out, tcfg, log)
        model = r.pop("model")
        t0 = time.time()
        fn = torch_logits_fn(model)
        acc = eval_table(fn, arch, args.eval_n, seed=12345) if args.eval_n else {}
        held = eval_table(fn, arch, args.eval_n // 2, seed=777, steps_list=(16,), modes=("chat",),
                          held=True) if args.eval_n else {}
        log(f"[{arch}] eval {time.time() - t0:.1f}s")
        for k, v in {**acc, **{f"held_out/{k}": v for k, v in held.items()}}.items():
            log(f"[{arch}] {k}: {v:.3f}")
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        with open(os.path.join(args.out, f"tiny-{arch}.json"), "w") as f:
            json.dump({**r, "gpu": gpu, "torch": torch.__version__, "eval_n": args.eval_n,
                       "accuracy_pytorch": acc, "accuracy_pytorch_held_out": held}, f, indent=1)
        try:
            export(model, arch, os.path.join(args.out, f"tiny-{arch}.gguf"))
            log(f"[{arch}] exported tiny-{arch}.gguf")
        except ImportError as e:
            log(f"[{arch}] export skipped ({e}); run: train_tiny.py export")


def load_checkpoint(path: str):
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ModelCfg(**ck["cfg"]))
    model.load_state_dict(ck["state"])
    return model.eval()


def cmd_export(args) -> None:
    for arch in args.arch:
        model = load_checkpoint(os.path.join(args.out, f"tiny-{arch}.pt"))
        export(model, arch, os.path.join(args.out, f"tiny-{arch}.gguf"))
        print(f"exported {args.out}/tiny-{arch}.gguf")


# ----------------------------------------------------------------------------------------------
# Check (CPU): llama.cpp parity and accuracy through llama.cpp


class LlamaCppLogits:
    """All-position logits from llama.cpp for a batch of equal-length canvases, one sequence each."""

    def __init__(self, path: str, n_seq: int = 32, n_threads: int = 2, flash_attn: bool | None = None,
                 n_ctx: int = CTX):
        import ctypes

        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        self._cb = L.llama_log_callback(lambda level, text, ud: None)
        L.llama_log_set(self._cb, ctypes.c_void_p())
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        assert self.model, path
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_seq = n_seq
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx * n_seq
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = n_threads
        if flash_attn is not None:  # default: llama.cpp decides (AUTO), as dlm leaves it
            cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.batch = L.llama_batch_init(n_ctx * n_seq, 0, 1)

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        outs = []
        for c0 in range(0, len(canvas), self.n_seq):
            chunk = canvas[c0:c0 + self.n_seq]
            B, Lc = chunk.shape
            b = self.batch
            for s in range(B):
                for i in range(Lc):
                    j = s * Lc + i
                    b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = int(chunk[s, i]), i, 1, 1
                    b.seq_id[j][0] = s
            b.n_tokens = B * Lc
            assert self.L.llama_decode(self.ctx, b) == 0
            lg = np.ctypeslib.as_array(self.L.llama_get_logits(self.ctx), shape=(B * Lc, self.n_vocab))
            outs.append(lg.reshape(B, Lc, self.n_vocab).copy())
            mem = self.L.llama_get_memory(self.ctx)
            if mem:
                self.L.llama_memory_clear(mem, True)
        return np.concatenate(outs)

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def parity(arch: str, path: str, n: int = 64, seed: int = 4242) -> dict:
    """Max |PyTorch - llama.cpp| logits on training-like canvases (masked in every way training masks).

    Two comparisons: the shipped f16 file under llama.cpp's default context settings (what dlm runs),
    and the same weights written as f32 with flash attention off, which isolates the graph from
    llama.cpp's f16 rounding of activations (f16 weights make ggml's CPU matmul round its inputs to f16).
    """
    import tempfile

    import torch

    torch.set_num_threads(2)
    model = build_model(ModelCfg(arch))
    load_gguf_into(model, path)
    model.eval()
    rng = np.random.default_rng(seed)
    canvases = []
    for _ in range(n):
        toks, maskable, forced = make_sample(rng)
        toks = np.array(toks)
        m = np.asarray(forced) | (np.asarray(maskable) & (rng.random(len(toks)) < rng.random()))
        canvases.append(np.where(m, MASK, toks)[None])
    with torch.no_grad():
        ours = [model(torch.from_numpy(c)).double().numpy() for c in canvases]
    out = {"canvases": n, "max_abs_logit": float(max(np.abs(o).max() for o in ours))}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        export(model, arch, f32, dtype="f32")
        for label, file, fa in (("f16_file", path, None), ("f32_no_flash_attn", f32, False)):
            ref = LlamaCppLogits(file, flash_attn=fa)
            theirs = [ref(c).astype(np.float64) for c in canvases]
            ref.close()
            out[label] = {
                "max_abs_logit_diff": float(max(np.abs(a - b).max() for a, b in zip(ours, theirs))),
                "max_abs_prob_diff": float(max(np.abs(softmax(a) - softmax(b)).max() for a, b in zip(ours, theirs))),
                "argmax_agreement": float(np.mean(np.concatenate(
                    [(a.argmax(-1) == b.argmax(-1)).ravel() for a, b in zip(ours, theirs)]))),
            }
    return out


def cmd_check(args) -> None:
    import llama_cpp  # noqa: F401  (before torch/numpy work; see docs)

    report = {}
    for arch in args.arch:
        path = os.path.join(args.out, f"tiny-{arch}.gguf")
        t0 = time.time()
        par = parity(arch, path)
        print(f"[{arch}] parity {par} ({time.time() - t0:.1f}s)", flush=True)
        fn = LlamaCppLogits(path, n_threads=args.threads)
        t0 = time.time()
        acc = eval_table(fn, arch, args.eval_n, seed=2024, steps_list=tuple(args.steps))
        fn.close()
        for k, v in acc.items():
            print(f"[{arch}] llama.cpp {k}: {v:.3f}", flush=True)
        print(f"[{arch}] eval {time.time() - t0:.1f}s", flush=True)
        report[arch] = {"parity": par, "accuracy_llama_cpp": acc, "eval_n": args.eval_n}
    with open(os.path.join(args.out, "check.json"), "w") as f:
        json.dump(report, f, indent=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train both models, evaluate in PyTorch, export GGUF")
    t.add_argument("--out", default="out/tiny")
    t.add_argument("--arch", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    t.add_argument("--steps", type=int, default=0, help="training steps (default: llada 4000, dream 3500)")
    t.add_argument("--sequential", action="store_true", help="train the models one after the other")
    t.add_argument("--batch", type=int, default=TrainCfg.batch)
    t.add_argument("--seed", type=int, default=TrainCfg.seed)
    t.add_argument("--workers", type=int, default=TrainCfg.workers)
    t.add_argument("--eval-n", type=int, default=500)
    t.add_argument("--auto-seconds", type=float, default=0,
                   help="time a short probe and choose --steps to fit this many seconds of training")
    e = sub.add_parser("export", help="export GGUF from the .pt checkpoints")
    e.add_argument("--out", default="out/tiny")
    e.add_argument("--arch", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    c = sub.add_parser("check", help="parity with llama.cpp and accuracy through llama.cpp (CPU)")
    c.add_argument("--out", default="out/tiny")
    c.add_argument("--arch", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    c.add_argument("--eval-n", type=int, default=100)
    c.add_argument("--steps", type=int, nargs="+", default=list(EVAL_STEPS))
    c.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    {"train": cmd_train, "export": cmd_export, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
