"""A run without a model: the real engine over a scripted forward, with hostile token texts.

Rendering, trace and picture tests use it so they need neither llama.cpp nor a GGUF file.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dlmcli.engine.denoise import VocabInfo, denoise
from dlmcli.engine.params import GenerationParams
from dlmcli.render.base import RunInfo

MASK, EOS = 3, 2
LETTERS = {4 + i: chr(ord("a") + i) for i in range(26)}
SPACE, NEWLINE, SCRIPT, ANSI, RTL, QUOTE, WIDE = range(30, 37)
TEXTS = {0: "", 1: "", 2: "", 3: "<|mask|>", **LETTERS, SPACE: " ", NEWLINE: "\n",
         SCRIPT: "<script>alert(1)</script>", ANSI: "\x1b[31mRED", RTL: "\u202e", QUOTE: "\"&'", WIDE: "日本"}
V = len(TEXTS)


def tok(ch: str) -> int:
    return {v: k for k, v in TEXTS.items()}[ch]


def wanted(region: int, hostile: bool = True) -> list[int]:
    """What the scripted model 'wants' at each generated position: text, hostile tokens, then EOS."""
    seq = [tok(c) for c in "hello world"]
    if hostile:
        seq += [NEWLINE, SCRIPT, SPACE, ANSI, RTL, QUOTE, WIDE]
    seq += [tok(c) for c in " done"]
    seq = seq[:region]
    return seq + [EOS] * (region - len(seq))


def token_text(t: int) -> str:
    return TEXTS.get(int(t), "")


def fake_run(gen_length: int = 32, steps: int = 16, block_length: int = 8, algorithm: str = "low-confidence",
             prompt: str = "say hello", seed: int = 0, hostile: bool = True, early_stop: bool = False):
    """Returns (info, steps, result) as the CLI's sinks would see them."""
    params = GenerationParams(gen_length=gen_length, steps=steps, block_length=block_length,
                              algorithm=algorithm, seed=seed, early_stop=early_stop).validate()
    prompt_tokens = [1] + [tok(c) if c in "abcdefghijklmnopqrstuvwxyz" else SPACE for c in prompt]
    gen_start = len(prompt_tokens)
    canvas = np.array(prompt_tokens + [MASK] * gen_length, dtype=np.int32)
    want = np.array(wanted(gen_length, hostile))
    rng = np.random.default_rng(seed)

    def forward(canvases, windows):
        out = []
        for c, (w0, w1) in zip(canvases, windows):
            z = rng.normal(0.0, 1.0, (len(c), V)).astype(np.float32)
            z[gen_start + np.arange(gen_length), want] += 4.0
            z[:, MASK] = -1e9
            out.append(z[w0:w1])
        return out

    vocab = VocabInfo(mask_id=MASK, shift=False, eog_ids=frozenset({EOS}), fill_id=EOS)
    info = RunInfo(model="/models/fake.gguf", prompt=prompt, prompt_tokens=tuple(prompt_tokens),
                   canvas=tuple(int(t) for t in canvas), gen_start=gen_start, mask_id=MASK,
                   params=params.to_dict(), token_text=token_text, eog_ids=frozenset({EOS}))
    run = list(denoise(canvas, gen_start, params, forward, vocab))
    final = run[-1].canvas[gen_start:].tolist()
    tokens = final[: final.index(EOS)] if EOS in final else final
    result = SimpleNamespace(
        text="".join(token_text(t) for t in tokens), tokens=tokens, steps=len(run), finish_reason="eos",
        timings=SimpleNamespace(total_s=0.5, forward_s=0.4, sampling_s=0.1),
    )
    return info, run, result
