"""Train, export and check tiny-code: a LLaDA-architecture diffusion model of CPython's standard library.

    python scripts/tiny_code_data.py all                          # CPU: manifest, tokenizer, token arrays
    python scripts/train_tiny_code.py train --out out/tiny-code   # GPU: ~5 min training + the yardstick
    python scripts/train_tiny_code.py export --out out/tiny-code  # CPU: GGUF (Q8_0) from the checkpoint
    python scripts/train_tiny_code.py check --out out/tiny-code   # CPU: tokenizer ids + logits vs llama.cpp

``train`` reads only ``out/tiny-code/data`` (token arrays and held-out eval items written by
``tiny_code_data.py encode``) and needs torch and numpy; every batch is a pure function of (seed,
step), the initialisation is torch seed 0. It writes the weights as float16 shards of at most
15 MB (``weights-N.pt``), a log, and the quality yardstick (``scripts/eval_tiny_code.py``) computed
with the PyTorch model through dlm's own decoding engine.

The training canvases are what dlm builds: ``[BOS]`` then code. Half of them are windows of a file
starting at a line (sometimes a few tokens into one), 40 % a whole function (dedented, at any
depth) followed by EOS and EOS padding, so that ``dlm generate --raw "def f(x):"`` writes one body
and ends. Lengths vary (32-256) so short canvases such as an infill of one line are in
distribution. Masking is LLaDA's (each position with probability t ~ U(0, 1)), plus prompt-style
states: a clean prefix with noise after it, and a clean prefix, a noisy block and everything after
it masked (the states of the block schedule). Loss: cross-entropy over masked positions, averaged
per sequence (LLaDA's 1/t weighting, approximately), then over the batch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from tiny_code_data import BOS, DATA_DIR, EOS, MASK, SPECIALS, TOKENIZER, Vocab, file_digest, manifest_digest  # noqa: E402
from train_tiny import ModelCfg, build_model, gguf_name  # noqa: E402

CTX = 256  # context written to the GGUF and the longest training canvas
LENGTHS = (32, 64, 128, 256)  # training canvas lengths, drawn per step
LENGTH_P = (0.1, 0.2, 0.3, 0.4)
UNIT_SHARE = 0.4  # share of canvases that are one whole function + EOS padding


def model_cfg(small: bool = False) -> ModelCfg:
    if small:  # for trying the pipeline on a CPU
        return ModelCfg("llada", n_layer=2, n_embd=64, n_head=2, n_ff=128)
    return ModelCfg("llada", n_layer=8, n_embd=384, n_head=6, n_ff=1024)


@dataclass(frozen=True)
class TrainCfg:
    steps: int = 3000
    tokens_per_batch: int = 131072
    lr: float = 1.5e-3
    warmup: int = 200
    weight_decay: float = 0.1
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Data


def load_split(data_dir: str, name: str) -> dict[str, np.ndarray]:
    z = np.load(os.path.join(data_dir, f"{name}.npz"))
    return {k: z[k] for k in z.files}


def make_batch(d: dict, seed: int, tokens_per_batch: int):
    """(tokens [B, L] int64, masked [B, L] bool); a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    L = int(rng.choice(LENGTHS, p=LENGTH_P))
    B = tokens_per_batch // L
    toks = d["tokens"]
    N = len(toks)
    unit = rng.random(B) < UNIT_SHARE
    si = rng.integers(0, len(d["stream_starts"]), B)
    ui = rng.integers(0, len(d["unit_starts"]), B)
    start = np.where(unit, d["unit_starts"][ui], d["stream_starts"][si])
    end = np.where(unit, d["unit_ends"][ui], d["stream_ends"][si])
    into = np.where(~unit & (rng.random(B) < 0.2), rng.integers(0, 64, B), 0)  # start inside a line
    start = np.minimum(start + into, end - 1)
    idx = start[:, None] + np.arange(L - 1)[None]
    body = np.where(idx < end[:, None], toks[np.minimum(idx, N - 1)], EOS)
    x = np.concatenate([np.full((B, 1), BOS), body], 1).astype(np.int64)

    t = (rng.permutation(B) + rng.random(B)) / B  # stratified noise levels
    t = 1e-3 + (1 - 1e-3) * t
    masked = rng.random((B, L)) < t[:, None]
    pos = np.arange(L)[None]
    kind = rng.random(B)[:, None]
    cut = rng.integers(1, max(2, L - 8), B)[:, None]
    blk = rng.choice([4, 8, 16, 32], B)[:, None]
    prompt_like = kind < 0.35  # a clean prompt, noise after it
    masked &= ~(prompt_like & (pos < cut))
    semi = (kind >= 0.2) & (kind < 0.35)  # ... and everything after the current block masked
    masked |= semi & (pos >= cut + blk)
    masked[:, 0] = False
    none = ~masked.any(1)
    masked[none, L - 1] = True
    return x, masked


_DATA: dict = {}


def _batch_for(args):
    seed, tokens = args
    return make_batch(_DATA, seed, tokens)


def batches(d: dict, tcfg: TrainCfg, workers: int = 6):
    """Batches in step order from forked worker processes; batch i depends only on (seed, i)."""
    import multiprocessing as mp

    _DATA.clear()
    _DATA.update(d)  # inherited by the forked workers
    jobs = ((tcfg.seed * 1_000_003 + step, tcfg.tokens_per_batch) for step in range(tcfg.steps))
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_batch_for, jobs, chunksize=2)


# ----------------------------------------------------------------------------------------------
# Checkpoints: float16 shards small enough to come back from the GPU machine (16 MiB per file).


def save_shards(model, out: str, max_bytes: int = 15_000_000) -> list[str]:
    import torch

    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        n = v.numel() * 2
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += n
    shards.append(cur)
    paths = []
    for i, sh in enumerate(shards):
        p = os.path.join(out, f"weights-{i}.pt")
        torch.save(sh, p + ".tmp")
        os.replace(p + ".tmp", p)
        paths.append(p)
    for stale in range(len(shards), 8):
        p = os.path.join(out, f"weights-{stale}.pt")
        if os.path.exists(p):
            os.remove(p)
    return paths


def load_model(out: str, cfg: ModelCfg | None = None, n_vocab: int | None = None):
    import torch

    meta = json.load(open(os.path.join(out, "train.json")))
    cfg = cfg or ModelCfg(**meta["cfg"])
    model = build_model(cfg, n_vocab=n_vocab or meta["n_vocab"], n_ctx=CTX)
    state = {}
    i = 0
    while os.path.exists(p := os.path.join(out, f"weights-{i}.pt")):
        state.update(torch.load(p, map_location="cpu"))
        i += 1
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Training


def cmd_train(args) -> None:
    import torch
    import torch.nn.functional as F

    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train.log"), "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    d = load_split(args.data, "train")
    held = load_split(args.data, "heldout")
    n_vocab = len(Vocab())
    cfg = model_cfg(args.small)
    torch.manual_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(cfg, n_vocab=n_vocab, n_ctx=CTX).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]

    def make_opt(tc):
        return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95),
                                 fused=dev == "cuda")

    steps = args.steps
    if args.auto_seconds:  # time a few steps on a copy of the initial weights, then start over
        init = {k: v.clone() for k, v in model.state_dict().items()}
        probe = TrainCfg(steps=40, tokens_per_batch=args.tokens, seed=99)
        opt = make_opt(probe)
        t_mark = None
        for i, (tok, masked) in enumerate(batches(d, probe)):
            if i == 10:
                torch.cuda.synchronize() if dev == "cuda" else None
                t_mark = time.time()
            _train_step(model, opt, tok, masked, dev, F, probe.lr)
        torch.cuda.synchronize() if dev == "cuda" else None
        per_step = (time.time() - t_mark) / 30
        steps = max(100, int(args.auto_seconds / per_step) // 100 * 100)
        log(f"timing probe: {per_step * 1000:.1f} ms/step -> --steps {steps} for {args.auto_seconds:.0f}s")
        model.load_state_dict(init)
    tcfg = TrainCfg(steps=steps, tokens_per_batch=args.tokens, lr=args.lr, seed=args.seed)
    opt = make_opt(tcfg)

    def lr_at(step):
        if step < tcfg.warmup:
            return tcfg.lr * (step + 1) / tcfg.warmup
        frac = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        return tcfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    meta = {"cfg": asdict(cfg), "train": asdict(tcfg), "n_vocab": n_vocab, "params": n_params, "ctx": CTX,
            "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
            "data": open(os.path.join(args.data, "SOURCE")).read().split("\n")}
    log(f"{n_params / 1e6:.2f}M params, cfg {asdict(cfg)}, train {asdict(tcfg)}, device {meta['device']}")
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump(meta, f, indent=1)

    t0 = time.time()
    model.train()
    ema = None
    for step, (tok, masked) in enumerate(batches(d, tcfg)):
        loss = _train_step(model, opt, tok, masked, dev, F, lr_at(step))
        if step % 100 == 0 or step == tcfg.steps - 1:
            lv = loss.item()
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
            log(f"step {step:5d} loss {lv:.4f} (avg {ema:.4f}) lr {lr_at(step):.2e} {time.time() - t0:6.1f}s")
        if args.checkpoint_every and step and step % args.checkpoint_every == 0:
            save_shards(model, args.out)
    if dev == "cuda":
        torch.cuda.synchronize()
    meta["train_seconds"] = round(time.time() - t0, 1)
    log(f"trained {tcfg.steps} steps in {meta['train_seconds']}s")
    model.eval()
    save_shards(model, args.out)
    meta["heldout_loss"] = heldout_loss(model, held, dev)
    log(f"held-out masked-token loss by noise level: {meta['heldout_loss']}")
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if args.eval:
        import eval_tiny_code

        t1 = time.time()
        eval_tiny_code.run_all(TorchForward(model), os.path.join(args.data, "eval.json"),
                               os.path.join(args.out, "yardstick.json"), quick=args.small, log=log)
        log(f"yardstick in {time.time() - t1:.0f}s")


def _train_step(model, opt, tok, masked, dev, F, lr):
    import torch

    tok = torch.from_numpy(tok).to(dev, non_blocking=True)
    masked = torch.from_numpy(masked).to(dev, non_blocking=True)
    inp = torch.where(masked, MASK, tok)
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
        logits = model(inp)
    ce = F.cross_entropy(logits.float().flatten(0, 1), tok.flatten(), reduction="none").view(tok.shape)
    m = masked.float()
    loss = ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def heldout_loss(model, held: dict, dev: str, n: int = 256) -> dict:
    """Mean cross-entropy over masked tokens of held-out windows, at fixed noise levels."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    out = {}
    toks = held["tokens"]
    starts = rng.choice(held["stream_starts"], n)
    x = np.stack([np.concatenate([[BOS], toks[s:s + 127]]) for s in starts if s + 127 <= len(toks)]).astype(np.int64)
    for t in (0.15, 0.5, 0.85):
        m = rng.random(x.shape) < t
        m[:, 0] = False
        xt = torch.from_numpy(x).to(dev)
        mt = torch.from_numpy(m).to(dev)
        with torch.no_grad():
            lg = model(torch.where(mt, MASK, xt)).float()
        out[f"t={t}"] = round(F.cross_entropy(lg[mt], xt[mt]).item(), 4)
    return out


class TorchForward:
    """dlm's engine ``Forward`` over the PyTorch model: logits per canvas, canvases grouped by length."""

    def __init__(self, model):
        import torch

        self.torch = torch
        self.model = model
        self.dev = next(model.parameters()).device
        self.passes = 0

    def __call__(self, canvases):
        # Only masked rows are read by the engine (LLaDA: unshifted), so only those cross to the host;
        # the other rows of each returned array are left unset.
        torch = self.torch
        self.passes += 1
        out: list = [None] * len(canvases)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(canvases):
            groups.setdefault(len(c), []).append(i)
        with torch.no_grad():
            for L, idx in groups.items():
                x = np.stack([np.asarray(canvases[i], np.int64) for i in idx])
                m = x == MASK
                lg = self.model(torch.from_numpy(x).to(self.dev))
                rows = lg[torch.from_numpy(m).to(self.dev)].float().cpu().numpy()
                r = 0
                for j, i in enumerate(idx):
                    a = np.empty((L, lg.shape[-1]), np.float32)
                    pos = np.flatnonzero(m[j])
                    a[pos] = rows[r:r + len(pos)]
                    r += len(pos)
                    out[i] = a
        return out


# ----------------------------------------------------------------------------------------------
# Export and check (CPU, here)


def cmd_export(args) -> None:
    export(args.out, args.gguf or os.path.join(args.out, "tiny-code.gguf"), dtype=args.dtype,
           defaults=json.loads(args.defaults))


def export(out: str, path: str, dtype: str = "q8_0", defaults: dict | None = None, model=None) -> None:
    from tools.ggufgen import BPEVocab, write_gguf

    model = model if model is not None else load_model(out)
    vocab = Vocab()
    bpe = BPEVocab(tokens=tuple(vocab.tokens), merges=tuple(vocab.merges), pre="gpt-2", bos_id=BOS, eos_id=EOS,
                   mask_id=MASK, n_special=len(SPECIALS))
    cfg = model.cfg
    tensors = {gguf_name(k): v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    extra = {"general.description": "tiny-code: a LLaDA-architecture masked-diffusion model trained from scratch "
             "by dlm's scripts/train_tiny_code.py on CPython 3.11.7's standard library (PSF licence).",
             "general.license": "MIT (weights); training data: Python Software Foundation License",
             "dlm.corpus_manifest_sha256": manifest_digest(), "dlm.tokenizer_sha256": file_digest(TOKENIZER)}
    for k, v in (defaults or {}).items():
        extra[f"dlm.{k}"] = int(v)
    write_gguf(path, arch="llada", tensors=tensors, n_head=cfg.n_head, context_length=CTX, rms_eps=cfg.rms_eps,
               rope_theta=cfg.rope_theta, vocab=bpe, mask_token=True, shift_logits=False, chat_template=None,
               name="tiny-code", dtype=dtype, extra_kv=extra)
    print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB, {dtype})")


def llama_tokenize(model_ptr, text: str, add_special: bool = False) -> list[int]:
    import llama_cpp as L

    vocab = L.llama_model_get_vocab(model_ptr)
    raw = text.encode()
    n = len(raw) + 8
    buf = (L.llama_token * n)()
    got = L.llama_tokenize(vocab, raw, len(raw), buf, n, add_special, False)
    assert got >= 0
    return list(buf[:got])


def tokenizer_agreement(path: str, texts: dict[str, str]) -> dict:
    """Ids from llama.cpp (the GGUF's vocab) vs the Python tokenizer, per text; and detokenized round trip."""
    import llama_cpp as L

    from train_tiny import LlamaCppLogits  # noqa: F401  (quiet log callback installed there)

    vocab = Vocab()
    m = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
    try:
        res = {"texts": len(texts), "tokens": 0, "mismatched_texts": []}
        for name, text in texts.items():
            ours = vocab.encode(text)
            theirs = llama_tokenize(m, text)
            res["tokens"] += len(ours)
            if ours != theirs:
                res["mismatched_texts"].append(name)
        return res
    finally:
        L.llama_model_free(m)


def cmd_check(args) -> None:
    import llama_cpp  # noqa: F401

    sys.path.insert(0, HERE)
    from tiny_code_data import load_sources, read_manifest

    path = args.gguf or os.path.join(args.out, "tiny-code.gguf")
    rows = [r for r in read_manifest() if r[2] == "heldout"]
    texts = load_sources(args.lib, rows) if args.lib else {}
    report = {}
    if texts:
        report["tokenizer"] = tokenizer_agreement(path, texts)
        print("tokenizer", report["tokenizer"], flush=True)
    report["parity"] = parity(args.out, path)
    print("parity", json.dumps(report["parity"], indent=1), flush=True)
    with open(os.path.join(args.out, "check.json"), "w") as f:
        json.dump(report, f, indent=1)


def parity_canvases(n: int = 16, seed: int = 4242) -> list[np.ndarray]:
    """Held-out windows of several lengths, masked as in training (noise level drawn per canvas)."""
    held = load_split(DATA_DIR, "heldout")
    toks = held["tokens"]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        L = LENGTHS[i % len(LENGTHS)]
        s = int(rng.choice(held["stream_starts"][held["stream_starts"] + L < len(toks)]))
        x = np.concatenate([[BOS], toks[s:s + L - 1]]).astype(np.int32)
        m = rng.random(L) < rng.uniform(0.05, 1.0)
        m[0] = False
        out.append(np.where(m, MASK, x).astype(np.int32))
    return out


def load_gguf_weights(model, path: str) -> None:
    """The GGUF's weights (any type gguf can dequantize) into the PyTorch model, as float32."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(path)
    by_name = {}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        by_name[t.name] = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    model.load_state_dict({k: torch.from_numpy(by_name[gguf_name(k)].copy()) for k in model.state_dict()})


def parity(out: str, path: str, n: int = 16) -> dict:
    """Max |PyTorch - llama.cpp| on masked held-out canvases: the shipped file, and an F32 twin."""
    import tempfile

    import torch

    from train_tiny import LlamaCppLogits, softmax

    torch.set_num_threads(2)
    model = load_model(out)
    load_gguf_weights(model, path)  # the shipped (quantized) weights, dequantized
    canvases = parity_canvases(n)
    with torch.no_grad():
        ours = [model(torch.from_numpy(c[None].astype(np.int64)))[0].double().numpy() for c in canvases]
    res = {"canvases": n, "max_abs_logit": float(max(np.abs(o).max() for o in ours))}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        export(out, f32, dtype="f32", model=model)
        for label, file, fa in (("shipped_file", path, None), ("f32_no_flash_attn", f32, False)):
            diffs, pdiffs, agree = [], [], []
            for c, o in zip(canvases, ours):
                ref = LlamaCppLogits(file, n_seq=1, flash_attn=fa, n_ctx=len(c))
                t = ref(c[None])[0].astype(np.float64)
                ref.close()
                diffs.append(np.abs(o - t).max())
                pdiffs.append(np.abs(softmax(o) - softmax(t)).max())
                agree.append((o.argmax(-1) == t.argmax(-1)).mean())
            res[label] = {"max_abs_logit_diff": float(max(diffs)), "max_abs_prob_diff": float(max(pdiffs)),
                          "argmax_agreement": float(np.mean(agree))}
    return res


def cmd_reference(args) -> None:
    """tests/data/tiny_code_reference.npz: PyTorch logits (the shipped GGUF's weights) for the parity test.

    For 4 masked held-out canvases: the canvas ids and, at every masked position, the 16 largest
    logits and their token ids; the test checks llama.cpp's logits there (torch is not a test need).
    """
    import torch

    path = args.gguf or os.path.join(args.out, "tiny-code.gguf")
    model = load_model(args.out)
    load_gguf_weights(model, path)
    canvases = parity_canvases(4, seed=77)[:3]  # lengths 32, 64, 128
    arrays = {}
    for i, c in enumerate(canvases):
        with torch.no_grad():
            lg = model(torch.from_numpy(c[None].astype(np.int64)))[0].numpy()
        pos = np.flatnonzero(c == MASK)
        top = np.argsort(-lg[pos], axis=-1)[:, :16]
        arrays[f"canvas{i}"] = c
        arrays[f"pos{i}"] = pos.astype(np.int32)
        arrays[f"top_ids{i}"] = top.astype(np.int32)
        arrays[f"top_logits{i}"] = np.take_along_axis(lg[pos], top, -1).astype(np.float32)
    np.savez_compressed(args.ref, **arrays)
    print(f"wrote {args.ref}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, save float16 shards, run the yardstick (GPU)")
    t.add_argument("--out", default="out/tiny-code")
    t.add_argument("--data", default=DATA_DIR)
    t.add_argument("--steps", type=int, default=TrainCfg.steps)
    t.add_argument("--auto-seconds", type=float, default=0,
                   help="time a short probe and choose --steps to fit this many seconds of training")
    t.add_argument("--tokens", type=int, default=TrainCfg.tokens_per_batch, help="tokens per batch")
    t.add_argument("--lr", type=float, default=TrainCfg.lr)
    t.add_argument("--seed", type=int, default=TrainCfg.seed)
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--no-eval", dest="eval", action="store_false")
    t.add_argument("--small", action="store_true", help="a 2-layer model and a short yardstick (CPU trial)")
    e = sub.add_parser("export", help="GGUF from the float16 shards (CPU)")
    e.add_argument("--out", default="out/tiny-code")
    e.add_argument("--gguf", help="output path (default OUT/tiny-code.gguf)")
    e.add_argument("--dtype", default="q8_0")
    e.add_argument("--defaults", default="{}", help='dlm.* keys as JSON, e.g. {"gen_length": 64}')
    c = sub.add_parser("check", help="llama.cpp's tokenizer and logits against the Python side (CPU)")
    c.add_argument("--out", default="out/tiny-code")
    c.add_argument("--gguf")
    from tiny_code_data import default_lib

    c.add_argument("--lib", default=default_lib())
    r = sub.add_parser("reference", help="reference logits for tests/test_tiny_code.py (CPU, torch)")
    r.add_argument("--out", default="out/tiny-code")
    r.add_argument("--gguf", default=os.path.join(HERE, "..", "dlmcli", "models", "tiny-code.gguf"))
    r.add_argument("--ref", default=os.path.join(HERE, "..", "tests", "data", "tiny_code_reference.npz"))
    args = ap.parse_args(argv)
    {"train": cmd_train, "export": cmd_export, "check": cmd_check, "reference": cmd_reference}[args.cmd](args)


if __name__ == "__main__":
    main()
