"""The public Python API. The CLI is a thin layer over this module.

A ladder from primitive to convenient:
- ``load(model)`` -> ``Model``: owns the llama.cpp handles; use it as a context manager.
- ``Model.denoise(prompt, ...)`` -> ``Generation``: iterate it for one ``Step`` per forward pass;
  ``Generation.result()`` then gives the ``Result``.
- ``Model.generate(prompt, ...)`` -> ``Result``.
- ``generate(prompt, model=...)`` -> ``Result``: load, run, close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .runtime.llama import ALL_LAYERS, Runtime  # first: llama_cpp before numpy

import numpy as np  # noqa: E402

from . import defaults
from .engine.denoise import VocabInfo, denoise_batch
from .engine.events import Step
from .engine.params import GenerationParams
from .engine.scoring import set_threads
from .errors import GenerationError, ModelError, UsageError
from .template import render_chat


@dataclass(frozen=True)
class Timings:
    total_s: float  # wall time from the first forward pass to the answer
    forward_s: float  # time inside llama.cpp's forward passes
    sampling_s: float  # host work: scoring, choosing, bookkeeping


@dataclass(frozen=True)
class Result:
    """A finished generation."""

    model: str  # model name or path as given
    prompt_tokens: list[int]  # ids fed to the model, template and BOS included
    tokens: list[int]  # generated ids, trimmed at the first end-of-generation token
    text: str  # the answer
    steps: int  # forward passes run
    finish_reason: str  # "eos" (an end-of-generation token ended it) or "length"
    timings: Timings
    params: GenerationParams
    canvas: list[int] = field(default_factory=list)  # the final canvas, prompt included

    def to_json(self) -> dict:
        return {
            "model": self.model, "prompt_tokens": self.prompt_tokens, "tokens": self.tokens,
            "text": self.text, "steps": self.steps, "finish_reason": self.finish_reason,
            "timings": {"total_s": round(self.timings.total_s, 6), "forward_s": round(self.timings.forward_s, 6),
                        "sampling_s": round(self.timings.sampling_s, 6)},
        }


class Generation:
    """One run in progress: iterate for steps; ``result()`` finishes it and returns the Result."""

    def __init__(self, model: "Model", prompt_tokens: list[int], canvas: np.ndarray, gen_start: int,
                 params: GenerationParams, trim: bool):
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.params = params
        self.gen_start = gen_start
        self.initial_canvas = canvas
        self.trim = trim
        self.last: Step | None = None
        self._forward_s = 0.0
        self._sampling_s = 0.0
        self._passes = 0
        self._t0 = None
        self._t_end = None
        self._it = denoise_batch([canvas], [gen_start], params, model.runtime.forward, model.vocab_info,
                                 trim_at_eog=trim)

    def __iter__(self) -> Iterator[Step]:
        return self

    def __next__(self) -> Step:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        try:
            step = next(self._it)[0]
        except StopIteration:
            self._t_end = self._t_end or time.perf_counter()
            raise
        self.last = step
        self._passes += 1
        self._forward_s += step.forward_s
        self._sampling_s += step.sampling_s
        return step

    def result(self) -> Result:
        for _ in self:
            pass
        canvas = self.last.canvas if self.last is not None else self.initial_canvas
        gen = [int(t) for t in canvas[self.gen_start:]]
        finish = "length"
        if self.trim:
            for i, t in enumerate(gen):
                if t in self.model.vocab_info.eog_ids:
                    gen, finish = gen[:i], "eos"
                    break
        total = (self._t_end or time.perf_counter()) - (self._t0 or time.perf_counter())
        return Result(
            model=self.model.name, prompt_tokens=list(self.prompt_tokens), tokens=gen,
            text=self.model.detokenize(gen), steps=self._passes, finish_reason=finish,
            timings=Timings(total, self._forward_s, self._sampling_s), params=self.params,
            canvas=[int(t) for t in canvas],
        )


class Model:
    """A diffusion LM loaded through llama.cpp, with what dlm reads from its GGUF."""

    def __init__(self, path: Path, *, name: str | None = None, n_gpu_layers: int = ALL_LAYERS,
                 n_threads: int | None = None, verbose: bool = False, catalog_defaults: dict | None = None):
        self.path = Path(path)
        self.name = name or str(path)
        catalog_defaults = dict(catalog_defaults or {})
        # A catalog entry may say how a base model wants its prompt framed (RND1: "Question: ...").
        self.prompt_format = catalog_defaults.pop("prompt_format", None)
        self.catalog_defaults = {k: v for k, v in catalog_defaults.items() if k in defaults.FIELDS}
        self.runtime = Runtime(self.path, n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose)
        try:
            self._read_metadata()
        except BaseException:
            self.runtime.close()
            raise
        if n_threads:
            set_threads(n_threads)

    def _read_metadata(self) -> None:
        m = self.runtime.model
        self.arch = m.meta("general.architecture") or "unknown"
        if not m.is_diffusion:
            raise ModelError(
                f"{self.name} is an autoregressive model (architecture '{self.arch}'), not a diffusion LM; "
                f"dlm runs LLaDA, LLaDA-MoE, Dream and RND1 GGUFs"
            )
        mask = self.runtime.mask_id
        if mask < 0:
            raise ModelError(f"{self.name} has no usable mask token (tokenizer.ggml.mask_token_id is missing "
                             f"or outside the vocabulary); it cannot be used for diffusion")
        if mask >= m.n_vocab:
            raise ModelError(f"{self.name} declares mask token {mask}, outside its vocabulary of {m.n_vocab}")
        if m.n_ctx_train <= 0:  # a u32 past 2^31 reads back negative
            raise ModelError(f"{self.name} declares a context length of {m.n_ctx_train}; its metadata is broken")
        shift_raw = m.meta("diffusion.shift_logits")
        if shift_raw is None:
            self.shift = self.arch not in defaults.UNSHIFTED_FAMILIES
        else:
            self.shift = shift_raw.strip().lower() in ("true", "1")
        self.chat_template = m.chat_template()
        self.n_ctx_train = m.n_ctx_train
        # llama.cpp's own end-of-generation set (EOS, EoT, <|im_end|>, ...); ~20 ms for 150k tokens.
        eog = {t for t in range(m.n_vocab) if self.runtime.is_eog(t)}
        eog.discard(mask)
        fill = self.runtime.eos_id if 0 <= self.runtime.eos_id < m.n_vocab else (min(eog) if eog else None)
        self.vocab_info = VocabInfo(mask_id=mask, shift=self.shift, eog_ids=frozenset(eog), fill_id=fill)
        self.model_defaults = dict(self.catalog_defaults)  # catalog < the file's own hints
        for key, conv in defaults.GGUF_KEYS.items():
            raw = m.meta(key)
            if raw is not None:
                try:
                    value = conv(raw)
                except ValueError:
                    continue  # a malformed hint is ignored, not fatal
                if value > 0:
                    self.model_defaults[key.split(".", 1)[1]] = value
        # A block hint that does not divide the file's own length is a broken hint, not the user's error.
        family = defaults.FAMILY_DEFAULTS.get(self.arch, defaults.FAMILY_DEFAULTS["llada"])
        length = self.model_defaults.get("gen_length", family["gen_length"])
        block = self.model_defaults.get("block_length")
        if block and length % block:
            del self.model_defaults["block_length"]

    # --- text <-> tokens --------------------------------------------------------------------
    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.runtime.detokenize(tokens)

    def prompt_tokens(self, prompt: str, *, system: str | None = None, raw: bool = False) -> list[int]:
        """Tokens fed to the model: the chat template applied (unless raw), BOS where the model wants it."""
        for text in (prompt, system):
            if text is not None and not _is_utf8(text):
                raise UsageError("the prompt or system prompt holds lone surrogates, which are not UTF-8 text")
        if raw or not self.chat_template:
            if not raw and self.prompt_format:
                prompt = self.prompt_format.replace("{prompt}", prompt)
            return self.runtime.tokenize(prompt, add_special=True, parse_special=False)
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": prompt}]
        bos = self.runtime.piece(self.runtime.bos_id, special=True).decode("utf-8", "replace") \
            if self.runtime.bos_id >= 0 else ""
        eos = self.runtime.piece(self.runtime.eos_id, special=True).decode("utf-8", "replace") \
            if self.runtime.eos_id >= 0 else ""
        text = render_chat(self.chat_template, messages, bos_token=bos, eos_token=eos)
        add_bos = self.runtime.add_bos and not (bos and text.startswith(bos))
        tokens = self.runtime.tokenize(text, add_special=add_bos, parse_special=True)
        return tokens

    # --- generation -------------------------------------------------------------------------
    def params(self, **overrides) -> GenerationParams:
        """Family defaults < the GGUF's own hints < overrides (only non-None values count)."""
        return defaults.resolve(self.arch, self.model_defaults, overrides)

    def denoise(self, prompt: str | None = None, *, prompt_tokens: Sequence[int] | None = None,
                system: str | None = None, raw: bool = False, params: GenerationParams | None = None,
                **overrides) -> Generation:
        """Start a generation; iterate the returned object for steps."""
        if params is None:
            params = self.params(**overrides)
        elif overrides:
            raise TypeError("pass either params or keyword overrides, not both")
        if prompt_tokens is None:
            if prompt is None:
                raise UsageError("no prompt given")
            prompt_tokens = self.prompt_tokens(prompt, system=system, raw=raw)
        prompt_tokens = [int(t) for t in prompt_tokens]
        total = len(prompt_tokens) + params.gen_length
        if self.n_ctx_train and total > self.n_ctx_train:
            raise GenerationError(
                f"the prompt ({len(prompt_tokens)} tokens) plus --gen-length {params.gen_length} needs "
                f"{total} positions but {self.name} has a context of {self.n_ctx_train}; shorten one of them"
            )
        if any(t == self.vocab_info.mask_id for t in prompt_tokens):
            raise UsageError("the prompt contains the model's mask token; use 'dlm infill' to fill masks")
        canvas = np.array(prompt_tokens + [self.vocab_info.mask_id] * params.gen_length, dtype=np.int32)
        return Generation(self, prompt_tokens, canvas, len(prompt_tokens), params, trim=True)

    def generate(self, prompt: str | None = None, **kwargs) -> Result:
        return self.denoise(prompt, **kwargs).result()

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load(model: str | Path, *, n_gpu_layers: int = ALL_LAYERS, n_threads: int | None = None,
         verbose: bool = False, allow_pull: bool = False) -> Model:
    """Load MODEL: a .gguf path or a model name (bundled, catalog, owner/repo[:QUANT])."""
    from .hub import catalog_entry_for, resolve_model

    path = resolve_model(str(model), allow_pull=allow_pull)
    entry = catalog_entry_for(str(model))
    return Model(path, name=str(model), n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose,
                 catalog_defaults=entry.defaults if entry else None)


def generate(prompt: str, *, model: str | Path = "tiny-llada", **kwargs) -> Result:
    """One-shot: load the model, generate, free everything."""
    load_kw = {k: kwargs.pop(k) for k in ("n_gpu_layers", "n_threads", "verbose") if k in kwargs}
    with load(model, **load_kw) as m:
        return m.generate(prompt, **kwargs)
