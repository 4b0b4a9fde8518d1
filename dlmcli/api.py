"""The public Python API. The CLI is a thin layer over this module.

A ladder from primitive to convenient:
- ``load(model)`` -> ``Model``: owns the llama.cpp handles; use it as a context manager.
- ``Model.denoise(prompt, ...)`` -> ``Generation``: iterate it for one ``Step`` per forward pass;
  ``Generation.result()`` then gives the ``Result``.
- ``Model.generate(prompt, ...)`` -> ``Result``.
- ``generate(prompt, model=...)`` -> ``Result``: load, run, close.
- ``Model.chat(messages, ...)`` -> ``Result``: OpenAI-style messages in, the assistant's answer out
  (``Model.chat_denoise`` to watch it); ``Conversation`` (dlmcli.conversation) keeps the history.
- ``Model.infill(text, ...)`` -> ``InfillGeneration`` (its ``result()`` is an ``InfillResult``) and
  ``infill(text, model=...)``: fill the ``[MASK:N]`` spans of a text (docs/infill.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import defaults, families
from . import placeholders as infill_text
from .engine.denoise import VocabInfo, denoise_batch
from .engine.events import Step
from .engine.params import MAX_LENGTH, GenerationParams
from .engine.schedule import Schedule
from .engine.scoring import default_threads
from .errors import DlmError, GenerationError, ModelError, TemplateError, UsageError, param
from .messages import check_messages, plain_transcript
from .runtime.llama import ALL_LAYERS, Devices, Runtime
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


@dataclass(frozen=True)
class FilledSpan:
    """One ``[MASK:N]`` span of an infill, filled."""

    position: int  # canvas index of the span's first token
    length: int  # tokens in the span (N)
    tokens: list[int]  # the ids the model put there
    text: str  # those ids detokenized on their own (end-of-generation tokens show as nothing)
    offset: int  # character offset of this fill in the result's text


@dataclass(frozen=True)
class InfillResult(Result):
    """A finished infill. The whole canvas is the answer: ``prompt_tokens`` is the initial canvas
    (mask ids at the spans), ``tokens`` the filled canvas, ``text`` the user's fixed text verbatim
    with each span's fill in place, ``finish_reason`` always "filled" (nothing is trimmed)."""

    spans: tuple[FilledSpan, ...] = ()

    def to_json(self) -> dict:
        out = super().to_json()
        out["spans"] = [{"position": sp.position, "length": sp.length, "tokens": sp.tokens, "text": sp.text,
                         "offset": sp.offset} for sp in self.spans]
        return out


def refuse_ignored(params: GenerationParams, overrides: dict) -> GenerationParams:
    """Refuse a setting the user made that the resolved schedule would silently ignore."""
    user = {k for k, v in overrides.items() if v is not None}
    if "block_length" in user and params.schedule != "block":
        raise UsageError(f"{param('block_length')} applies to the block schedule, and this run uses "
                         f"{param('schedule')} {params.schedule}; drop {param('block_length')} or add "
                         f"{param('schedule')} block")
    if "eps" in user and params.schedule != "timestep":
        raise UsageError(f"{param('eps')} applies to the timestep schedule, and this run uses {param('schedule')} "
                         f"{params.schedule}; drop {param('eps')} or add {param('schedule')} timestep")
    return params


class Generation:
    """One run in progress: iterate for steps; ``result()`` finishes it and returns the Result."""

    fixed: tuple[int, ...] = ()  # canvas positions the user pinned (--force text, infill's fixed text)
    forced: tuple[tuple[int, int, str], ...] = ()  # --force: (start, end) in the generated region, text

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
        self._t0: float | None = None
        self._t_end: float | None = None
        model.check_cache(params)
        model._reserve([canvas], [params])
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
        total = (self._t_end or time.perf_counter()) - (self._t0 or time.perf_counter())
        return self.model._result(self.prompt_tokens, canvas, self.gen_start, self.params, self.trim,
                                  self._passes, Timings(total, self._forward_s, self._sampling_s))


class BatchGeneration:
    """Several prompts denoised together: one forward pass per step for all unfinished ones.

    Iterate for one list of Steps per forward pass (one Step per sequence that took part);
    ``results()`` then gives one Result per prompt, in order. A sequence's ``forward_s`` counts the
    whole shared pass; ``total_s`` is the batch's wall time. ``params`` is one GenerationParams for
    all prompts or one per prompt (lengths and schedules may differ).
    """

    def __init__(self, model: "Model", prompt_tokens: list[list[int]],
                 params: GenerationParams | Sequence[GenerationParams], first_index: int = 0):
        self.model = model
        self.prompt_tokens = prompt_tokens
        plist = [params] * len(prompt_tokens) if isinstance(params, GenerationParams) else list(params)
        if len(plist) != len(prompt_tokens):
            raise ValueError("pass one GenerationParams, or one per prompt")
        self.params = params
        self.param_list = plist
        self.first_index = first_index
        self.canvases = [model._canvas(t, p) for t, p in zip(prompt_tokens, plist)]
        self.last: list[Step | None] = [None] * len(prompt_tokens)
        self._stats = [[0, 0.0, 0.0] for _ in prompt_tokens]  # passes, forward_s, sampling_s
        self._t0: float | None = None
        self._t_end: float | None = None
        for p in plist:
            model.check_cache(p)
        model._reserve(self.canvases, plist)
        self._it = denoise_batch(self.canvases, [len(t) for t in prompt_tokens], plist,
                                 model.runtime.forward, model.vocab_info, first_index=first_index)

    def __iter__(self) -> Iterator[list[Step]]:
        return self

    def __next__(self) -> list[Step]:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        try:
            steps = next(self._it)
        except StopIteration:
            self._t_end = self._t_end or time.perf_counter()
            raise
        for st in steps:
            j = st.seq - self.first_index
            self.last[j] = st
            acc = self._stats[j]
            acc[0] += 1
            acc[1] += st.forward_s
            acc[2] += st.sampling_s
        return steps

    def results(self) -> list[Result]:
        for _ in self:
            pass
        total = (self._t_end or time.perf_counter()) - (self._t0 or time.perf_counter())
        out = []
        for j, toks in enumerate(self.prompt_tokens):
            last = self.last[j]
            canvas = last.canvas if last is not None else self.canvases[j]
            passes, fwd, smp = self._stats[j]
            out.append(self.model._result(toks, canvas, len(toks), self.param_list[j], True, int(passes),
                                          Timings(total, fwd, smp)))
        return out


class InfillGeneration(Generation):
    """An infill in progress: the engine fills every mask of the canvas and trims nothing."""

    def __init__(self, model: "Model", canvas: np.ndarray, params: GenerationParams,
                 pieces: list, span_positions: list[int], fixed: tuple[int, ...]):
        super().__init__(model, [int(t) for t in canvas], canvas, span_positions[0], params, trim=False)
        self.pieces = pieces
        self.span_positions = span_positions
        self.fixed = fixed

    def result(self) -> InfillResult:
        for _ in self:
            pass
        canvas = [int(t) for t in (self.last.canvas if self.last is not None else self.initial_canvas)]
        fills, spans, offset = [], [], 0
        positions = iter(self.span_positions)
        for piece in self.pieces:
            if isinstance(piece, str):
                offset += len(piece)
                continue
            pos = next(positions)
            toks = canvas[pos:pos + piece.length]
            # Each fill is detokenized on its own and the fixed text is the user's own string, so
            # no tokenize/detokenize round trip can alter what the user wrote.
            text = self.model.detokenize(toks)
            fills.append(text)
            spans.append(FilledSpan(pos, piece.length, toks, text, offset))
            offset += len(text)
        total = (self._t_end or time.perf_counter()) - (self._t0 or time.perf_counter())
        return InfillResult(
            model=self.model.name, prompt_tokens=list(self.prompt_tokens), tokens=canvas,
            text=infill_text.render(self.pieces, fills), steps=self._passes, finish_reason="filled",
            timings=Timings(total, self._forward_s, self._sampling_s), params=self.params, canvas=canvas,
            spans=tuple(spans),
        )


class Model:
    """A diffusion LM loaded through llama.cpp, with what dlm reads from its GGUF."""

    def __init__(self, path: Path, *, name: str | None = None, n_gpu_layers: int = ALL_LAYERS,
                 n_threads: int | None = None, verbose: bool = False, catalog_defaults: dict | None = None,
                 prompt_format: str | None = None,
                 rpc: str | Sequence[str] | None = None, split_mode: str | None = None,
                 tensor_split: str | Sequence[float] | None = None, main_gpu: int | None = None,
                 cache: str = "off", budget=None):
        self.path = Path(path)
        self.name = name or str(path)
        # A catalog entry's own generation settings (over its family's, which defaults.resolve adds) and,
        # for a base model, how it wants its prompt framed (RND1: "Question: {prompt}\nAnswer:").
        self.catalog_defaults = {k: v for k, v in (catalog_defaults or {}).items() if k in defaults.FIELDS}
        self.prompt_format = prompt_format
        devices = Devices(rpc=rpc, split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu)
        # cache="prefix": Fast-dLLM's approximate prefix cache (docs/kv-cache.md); the model is then
        # loaded under its autoregressive twin arch, which has KV memory.
        self.cache = cache
        _check_layer_count(self.path)
        self.runtime = Runtime(self.path, n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose,
                               devices=devices, cache=cache, budget=budget)
        try:
            self._read_metadata()
        except BaseException:
            self.runtime.close()
            raise

    @property
    def placement(self):
        """Where llama.cpp put the layers (``lines()`` describes it), or None if its log did not say."""
        return self.runtime.model.placement

    def _read_metadata(self) -> None:
        m = self.runtime.model
        self.arch = m.meta("general.architecture") or "unknown"
        if not m.is_diffusion:
            raise ModelError(
                f"{self.name} is an autoregressive model (architecture '{self.arch}'), not a diffusion LM; "
                f"dlm runs {families.labels()} GGUFs"
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
        declared = None if shift_raw is None else shift_raw.strip().lower() in ("true", "1")
        self.shift = families.shift_logits(self.arch, declared)
        self.chat_template = m.chat_template()
        self.n_ctx_train = m.n_ctx_train
        # llama.cpp's own end-of-generation set (EOS, EoT, <|im_end|>, ...); ~20 ms for 150k tokens.
        eog = {t for t in range(m.n_vocab) if self.runtime.is_eog(t)}
        eog.discard(mask)
        fill = self.runtime.eos_id if 0 <= self.runtime.eos_id < m.n_vocab else (min(eog) if eog else None)
        # Scoring runs between forward passes, while llama.cpp's threads are idle: as many as llama.cpp's.
        threads = self.runtime.n_threads or default_threads()
        self.vocab_info = VocabInfo(mask_id=mask, shift=self.shift, eog_ids=frozenset(eog), fill_id=fill,
                                    threads=threads)
        self.model_defaults = {**self.catalog_defaults, **defaults.file_hints(m.meta, self.arch)}  # catalog < file

    def check_cache(self, params: GenerationParams) -> None:
        """The prefix cache refreshes at block starts: the timestep schedule has none."""
        if self.cache != "off" and params.schedule != "block":
            raise UsageError(f"--cache {self.cache} caches the prefix of the current block, and the "
                             f"{params.schedule} schedule has no blocks; add --schedule block")

    # --- text <-> tokens --------------------------------------------------------------------
    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.runtime.detokenize(tokens)

    def prompt_tokens(self, prompt: str, *, system: str | None = None, raw: bool = False) -> list[int]:
        """Tokens fed to the model: the chat template applied (unless raw), BOS where the model wants it."""
        if raw and system is not None:
            raise UsageError(f"{param('system')} goes into the chat template, which {param('raw')} skips; "
                             f"drop one of them")
        if raw or not self.chat_template:
            if not raw and self.prompt_format:
                prompt = self.prompt_format.replace("{prompt}", prompt)
            return self.runtime.tokenize(prompt, add_special=True, parse_special=False)
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": prompt}]
        try:
            return self._template_tokens(messages)
        except TemplateError as e:
            raise e.with_hint(f"pass {param('raw')} to skip the template") from None

    @property
    def context_length(self) -> int | None:
        """Positions one canvas (prompt + answer) may have: the model's training context, None if unknown."""
        return self.n_ctx_train or None

    def chat_tokens(self, messages: Sequence[dict]) -> list[int]:
        """Tokens for a conversation: MESSAGES (OpenAI-style ``{"role", "content"}``; UsageError when
        malformed) through the chat template, ending with the assistant's header. A model without a
        template gets a plain transcript (see ``messages.plain_transcript``); a lone user message is
        then exactly what ``dlm generate`` would feed."""
        msgs = check_messages(messages)
        if self.chat_template:
            return self._template_tokens(msgs)
        if len(msgs) == 1 and msgs[0]["role"] == "user":
            return self.prompt_tokens(msgs[0]["content"])
        return self.runtime.tokenize(plain_transcript(msgs, self.prompt_format), add_special=True,
                                     parse_special=False)

    def _template_tokens(self, messages: list[dict]) -> list[int]:
        """The chat template over MESSAGES plus the generation prompt, tokenized (BOS as the model wants)."""
        bos = self.runtime.piece(self.runtime.bos_id, special=True).decode("utf-8", "replace") \
            if self.runtime.bos_id >= 0 else ""
        eos = self.runtime.piece(self.runtime.eos_id, special=True).decode("utf-8", "replace") \
            if self.runtime.eos_id >= 0 else ""
        assert self.chat_template is not None  # callers check that the model has one
        text = render_chat(self.chat_template, messages, bos_token=bos, eos_token=eos)
        add_bos = self.runtime.add_bos and not (bos and text.startswith(bos))
        tokens = self.runtime.tokenize(text, add_special=add_bos, parse_special=True)
        return tokens

    # --- generation -------------------------------------------------------------------------
    def params(self, **overrides) -> GenerationParams:
        """Family defaults < the GGUF's own hints < overrides (only non-None values count)."""
        return self.params_with_notes(**overrides)[0]

    def params_with_notes(self, **overrides) -> tuple[GenerationParams, list[str]]:
        """``params``, and one note per value dlm chose because the defaults did not fit (docs/parameters.md)."""
        params, notes = defaults.resolve_with_notes(self.arch, self.model_defaults, overrides)
        return refuse_ignored(params, overrides), notes

    def denoise(self, prompt: str | None = None, *, prompt_tokens: Sequence[int] | None = None,
                system: str | None = None, raw: bool = False, params: GenerationParams | None = None,
                force: Sequence[tuple[int, str]] | None = None, **overrides) -> Generation:
        """Start a generation; iterate the returned object for steps.

        ``force``: (offset, text) pairs; each text is placed at that token offset of the generated
        region before the first pass and is never masked, so every step sees it (the LLaDA demo's
        constraints). The answer still ends at its first end-of-generation token, even one before
        a forced text; ``Generation.forced`` lets a caller notice that.
        """
        if params is None:
            params = self.params(**overrides)
        elif overrides:
            raise TypeError("pass either params or keyword overrides, not both")
        if prompt_tokens is None:
            if prompt is None:
                raise UsageError("no prompt given")
            prompt_tokens = self.prompt_tokens(prompt, system=system, raw=raw)
        prompt_tokens = [int(t) for t in prompt_tokens]
        canvas = self._canvas(prompt_tokens, params)
        forced = self._place_forced(canvas, len(prompt_tokens), params.gen_length, force or ())
        gen = Generation(self, prompt_tokens, canvas, len(prompt_tokens), params, trim=True)
        gen.forced = tuple(forced)
        gen.fixed = tuple(len(prompt_tokens) + i for start, end, _ in forced for i in range(start, end))
        return gen

    def chat_denoise(self, messages: Sequence[dict], *, params: GenerationParams | None = None,
                     force: Sequence[tuple[int, str]] | None = None, **overrides) -> Generation:
        """Start the assistant's answer to MESSAGES; iterate the returned object for steps."""
        return self.denoise(prompt_tokens=self.chat_tokens(messages), params=params, force=force, **overrides)

    def chat(self, messages: Sequence[dict], **kwargs) -> Result:
        """The assistant's answer to MESSAGES (a list of ``{"role", "content"}``), denoised to the end."""
        return self.chat_denoise(messages, **kwargs).result()

    def denoise_batch(self, prompts: Sequence[str] | None = None, *,
                      prompt_tokens: Sequence[Sequence[int]] | None = None, system: str | None = None,
                      raw: bool = False, params: GenerationParams | Sequence[GenerationParams] | None = None,
                      first_index: int = 0, **overrides) -> BatchGeneration:
        """Start several generations that share every forward pass (prompts may differ in length;
        PARAMS may be one per prompt)."""
        if params is None:
            params = self.params(**overrides)
        elif overrides:
            raise TypeError("pass either params or keyword overrides, not both")
        if prompt_tokens is None:
            if prompts is None:
                raise UsageError("no prompts given")
            prompt_tokens = [self.prompt_tokens(p, system=system, raw=raw) for p in prompts]
        toks = [[int(t) for t in pt] for pt in prompt_tokens]
        if not toks:
            raise UsageError("no prompts given")
        return BatchGeneration(self, toks, params, first_index)

    def generate_batch(self, prompts: Sequence[str] | None = None, **kwargs) -> list[Result]:
        return self.denoise_batch(prompts, **kwargs).results()

    def check_prompt(self, prompt_tokens: Sequence[int], params: GenerationParams) -> None:
        """Raise what generating from PROMPT_TOKENS would raise (too long for the context, a mask token)."""
        self._canvas([int(t) for t in prompt_tokens], params)

    def _reserve(self, canvases, plist) -> None:
        # The context for these canvases is made now, not inside the first forward pass: its set-up
        # (milliseconds, 7x a tiny model's pass) is not a pass, as llama-diffusion-cli does not count it.
        rt = self.runtime
        if rt.prefix is None:
            copies = [p.pass_copies for p in plist]
            rt.reserve(sum(len(c) * k for c, k in zip(canvases, copies)), sum(copies))

    def _canvas(self, prompt_tokens: list[int], params: GenerationParams) -> np.ndarray:
        total = len(prompt_tokens) + params.gen_length
        if self.n_ctx_train and total > self.n_ctx_train:
            raise GenerationError(
                f"the prompt ({len(prompt_tokens)} tokens) plus {param('gen_length')} {params.gen_length} needs "
                f"{total} positions but {self.name} has a context of {self.n_ctx_train}; shorten one of them"
            )
        if any(t == self.vocab_info.mask_id for t in prompt_tokens):
            raise UsageError("the prompt contains the model's mask token; use 'dlm infill' to fill masks")
        return np.array(prompt_tokens + [self.vocab_info.mask_id] * params.gen_length, dtype=np.int32)

    def _result(self, prompt_tokens, canvas, gen_start: int, params: GenerationParams, trim: bool,
                passes: int, timings: Timings) -> Result:
        gen = [int(t) for t in canvas[gen_start:]]
        finish = "length"
        if trim:
            for i, t in enumerate(gen):
                if t in self.vocab_info.eog_ids:
                    gen, finish = gen[:i], "eos"
                    break
        return Result(
            model=self.name, prompt_tokens=list(prompt_tokens), tokens=gen, text=self.detokenize(gen),
            steps=passes, finish_reason=finish, timings=timings, params=params,
            canvas=[int(t) for t in canvas],
        )

    def _place_forced(self, canvas: np.ndarray, gen_start: int, gen_length: int,
                      force: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
        """Write each forced text into CANVAS; returns (start, end, text) as region offsets."""
        placed: list[tuple[int, int, str]] = []
        for pos, text in force:
            flag = f"--force {pos}:{text}"
            toks = self.runtime.tokenize(text, add_special=False, parse_special=False)
            if not toks:
                raise UsageError(f"{flag}: the text is empty")
            end = pos + len(toks)
            if pos < 0 or end > gen_length:
                raise UsageError(f"{flag} does not fit: it covers offsets {pos}..{end - 1} ({len(toks)} tokens) "
                                 f"but the generated region is 0..{gen_length - 1} (--gen-length {gen_length})")
            for start, stop, other in placed:
                if pos < stop and start < end:
                    raise UsageError(f"{flag} overlaps --force {start}:{other} (offsets {start}..{stop - 1}); "
                                     f"move one of them")
            canvas[gen_start + pos:gen_start + end] = toks
            placed.append((pos, end, text))
        return placed

    # --- infilling --------------------------------------------------------------------------
    def infill_params(self, region: int, n_masks: int, **overrides) -> GenerationParams:
        """Defaults for an arbitrary mask layout: one block over [first mask, end of canvas) and one
        pass per masked position (each pass commits one token), unless the user says otherwise.
        A --block-length that does not divide the region leaves a shorter last block."""
        user = {k: v for k, v in overrides.items() if v is not None}
        if "gen_length" in user:
            raise UsageError(f"{param('gen_length')} does not apply to infill: the [MASK:N] spans set the length")
        block = user.pop("block_length", region)
        if block < 1:
            raise UsageError(f"{param('block_length')} must be at least 1 (got {block})")
        block = min(block, region)
        n_blocks = Schedule.plan("block", region, 1, block).n_blocks  # the last block may be shorter
        user.setdefault("steps", -(-n_masks // n_blocks) * n_blocks)
        params = defaults.resolve(self.arch, self.model_defaults, dict(user, gen_length=region,
                                                                       block_length=region))
        refuse_ignored(params, dict(overrides))
        if params.schedule == "block" and params.steps % n_blocks:
            lo = max(n_blocks, params.steps - params.steps % n_blocks)
            raise UsageError(f"{param('steps')} {params.steps} does not split evenly over the {n_blocks} blocks that "
                             f"{param('block_length')} {block} makes of the {region} infill positions; use a multiple "
                             f"of {n_blocks} (e.g. {lo} or {lo + n_blocks})")
        # Early stop is about trimming at end-of-generation, which an infill never does.
        return dataclasses.replace(params, block_length=block, early_stop=False)

    def infill(self, text: str, *, chat: bool = False, user: str | None = None, system: str | None = None,
               params: GenerationParams | None = None, **overrides) -> InfillGeneration:
        """Fill the ``[MASK]`` / ``[MASK:N]`` spans of TEXT; iterate the returned object for steps.

        The canvas is BOS + TEXT's tokens with N mask ids per span; fixed pieces are tokenized one
        by one, so no token crosses a span's edge. With ``chat`` it is the chat template's opening
        (optional system and user turns, then the assistant's header) followed by TEXT as the
        assistant's turn. The engine's generated region starts at the first mask.
        """
        pieces = infill_text.parse(text)
        if not chat and (user is not None or system is not None):
            raise UsageError("--user and --system set turns of the chat template; add --chat")
        if chat and self.chat_template:
            messages = ([{"role": "system", "content": system}] if system is not None else []) + \
                ([{"role": "user", "content": user}] if user is not None else [])
            try:
                prefix = self._template_tokens(messages)
            except TemplateError as e:
                raise e.with_hint("drop --chat to fill the text without the template") from None
        else:
            rt = self.runtime
            prefix = [rt.bos_id] if rt.add_bos and rt.bos_id >= 0 else []
        parts = [p if isinstance(p, infill_text.Span) else
                 self.runtime.tokenize(p, add_special=False, parse_special=False) for p in pieces]
        total = len(prefix) + sum(p.length if isinstance(p, infill_text.Span) else len(p) for p in parts)
        limit = self.n_ctx_train or MAX_LENGTH  # checked before any list of that size is built
        if total > limit:
            longest = max(infill_text.spans(pieces), key=lambda sp: sp.length)
            raise GenerationError(f"the text and its spans need {total} positions but {self.name} has a context "
                             f"of {limit}; shorten the spans (the longest is {longest.source} at character "
                             f"{longest.at})")
        mask = self.vocab_info.mask_id
        canvas, span_positions = list(prefix), []
        fixed: list[int] = []
        for p in parts:
            if isinstance(p, infill_text.Span):
                span_positions.append(len(canvas))
                canvas += [mask] * p.length
            else:
                fixed += range(len(canvas), len(canvas) + len(p))
                canvas += p
        if params is None:
            params = self.infill_params(len(canvas) - span_positions[0], canvas.count(mask), **overrides)
        elif overrides:
            raise TypeError("pass either params or keyword overrides, not both")
        return InfillGeneration(self, np.array(canvas, dtype=np.int32), params, pieces, span_positions,
                                tuple(fixed))

    def generate(self, prompt: str | None = None, **kwargs) -> Result:
        return self.denoise(prompt, **kwargs).result()

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(model: str | Path, *, n_gpu_layers: int = ALL_LAYERS, n_threads: int | None = None,
         verbose: bool = False, allow_pull: bool = False, rpc: str | Sequence[str] | None = None,
         split_mode: str | None = None, tensor_split: str | Sequence[float] | None = None,
         main_gpu: int | None = None, cache: str = "off", memory_check: bool = True,
         canvas: int | None = None) -> Model:
    """Load MODEL: a .gguf path or a model name (bundled, catalog, owner/repo[:QUANT]).

    ``memory_check``: first estimate the memory the load needs (weights, and the buffers of a
    ``canvas``-token pass: by default the model's generation length plus a short prompt) and refuse
    with ``dlmcli.memory.MemoryCheckError`` when this machine (or its GPUs) has less free; every
    later, larger canvas is checked again before its buffers are made (docs/reliability.md).

    ``rpc``: llama.cpp rpc-server hosts ("HOST:PORT,..." or a list) whose devices take layers;
    ``split_mode`` (none, layer, row), ``tensor_split`` and ``main_gpu``: llama.cpp's multi-device
    split (docs/distributed.md). A host lost in the middle of a run ends the process with one
    ``Error:`` line and exit status 1 (ggml-rpc cannot recover from it).
    ``cache="prefix"``: reuse the prompt's and earlier blocks' K/V within a block (Fast-dLLM's
    prefix cache; approximate, block schedule only; docs/kv-cache.md).
    """
    from .hub import catalog_entry_for, resolve_model

    Devices(rpc=rpc, split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu).check()
    path = resolve_model(str(model), allow_pull=allow_pull)
    entry = catalog_entry_for(str(model))
    budget = None
    if memory_check:
        budget = memory_budget(path, str(model), n_gpu_layers=n_gpu_layers, remote=bool(rpc), cache=cache,
                               catalog=entry.overrides if entry else None)
        if budget is not None:  # a canvas past the context fails later, on the context, with its own message
            budget.check(min(canvas or budget.default_canvas, budget.shape.n_ctx or 1 << 30))
    return Model(path, name=str(model), n_gpu_layers=n_gpu_layers, n_threads=n_threads, verbose=verbose,
                 catalog_defaults=entry.overrides if entry else None,
                 prompt_format=entry.prompt_format if entry else None, rpc=rpc, split_mode=split_mode,
                 tensor_split=tensor_split, main_gpu=main_gpu, cache=cache, budget=budget)


MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: past it, its loader aborts the process


def _check_layer_count(path: Path) -> None:
    """A file claiming more layers than llama.cpp holds is refused here: its loader would abort the
    whole process with a C++ assertion instead of an error (a malformed or hostile file)."""
    from .hub.ggufinfo import read_header
    from .runtime.llama import check_gguf_file

    check_gguf_file(path)
    try:
        md = read_header(path).metadata
    except ModelError:  # a header it cannot read: the load says what is wrong, as before
        return
    n = md.get(f"{md.get('general.architecture')}.block_count")
    if isinstance(n, int) and not 0 < n <= MAX_LAYERS:
        raise ModelError(f"{path.name} says it has {n} layers; llama.cpp loads 1 to {MAX_LAYERS} (the file is "
                         "malformed)")


def memory_budget(path: str | Path, name: str, *, n_gpu_layers: int = ALL_LAYERS, remote: bool = False,
                  cache: str = "off", catalog: dict | None = None):
    """The memory check of a model file (``dlmcli.memory.Budget``), against what is free now; None (no
    check) when the estimate cannot be made: a header that cannot be read here, or one whose shape is
    beyond the estimate (llama.cpp's load then says what is wrong with the file)."""
    from . import memory
    from .runtime.llama import check_gguf_file
    from .runtime.native import device_memory

    check_gguf_file(Path(path))  # the usual messages for a missing or non-GGUF file
    try:
        header = memory.read_header(path)
        shape = memory.shape_of(header.metadata, header.tensors_all)
        arch = header.metadata.get("general.architecture")
        params, _where, _error = defaults.sources(arch, catalog or {}, defaults.file_hints(header.metadata.get, arch))
        weights_in = memory.in_ram(path)
    except Exception:  # noqa: BLE001 (a malformed header means no estimate, never a traceback before the load)
        return None
    gen_length = params.gen_length if params is not None else GenerationParams.gen_length
    devices = device_memory() if n_gpu_layers != 0 else []
    hints = []
    from .hub import parse_spec

    try:
        ref = parse_spec(name)
    except DlmError:
        ref = None
    if ref is not None and ref.repo:
        hints.append(f"a smaller quantization (e.g. -m {ref.repo}:Q3_K_M)")
    else:
        hints.append("a smaller quantization of the model")
    return memory.Budget(name, shape, memory.free_now(devices), n_gpu_layers, kv=cache != "off", remote=remote,
                         hints=hints, default_canvas=min(gen_length + memory.PROMPT_ALLOWANCE,
                                                         shape.n_ctx or 1 << 30), weights_in=weights_in)


_LOAD_KW = ("n_gpu_layers", "n_threads", "verbose", "rpc", "split_mode", "tensor_split", "main_gpu", "cache",
            "memory_check")


def generate(prompt: str, *, model: str | Path = "tiny-llada", **kwargs) -> Result:
    """One-shot: load the model, generate, free everything."""
    load_kw = {k: kwargs.pop(k) for k in _LOAD_KW if k in kwargs}
    with load(model, **load_kw) as m:
        return m.generate(prompt, **kwargs)


def infill(text: str, *, model: str | Path = "tiny-llada", **kwargs) -> InfillResult:
    """One-shot: load the model, fill TEXT's [MASK:N] spans, free everything."""
    load_kw = {k: kwargs.pop(k) for k in _LOAD_KW if k in kwargs}
    with load(model, **load_kw) as m:
        return m.infill(text, **kwargs).result()


class RpcServer:
    """llama.cpp's RPC server over this machine's devices, for ``load(..., rpc=...)`` on other hosts.

    ``devices``: device names (e.g. ["CUDA0"]); default: the GPUs, else the CPU. ``run()`` serves until
    the process is interrupted; it cannot be stopped from within the process (llama.cpp's server loop
    has no stop), so run it in a process of its own, as ``dlm rpc-server`` does.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 50052, *, devices: Sequence[str] | None = None,
                 cache_dir: str | Path | None = None, n_threads: int | None = None, verbose: bool = False):
        from .runtime import native, rpc
        from .runtime.llama import MAX_THREADS, available_cores

        if n_threads is not None and not 1 <= n_threads <= MAX_THREADS:
            raise UsageError(f"--threads must be between 1 and {MAX_THREADS} (got {n_threads})")
        native.init(verbose)
        rpc.check_listen(host, port)
        self.host, self.port = host, port
        self.loopback = rpc.is_loopback(host)
        self.devices = rpc.server_devices(list(devices or ()))
        self.device_labels = [d.name + (f" ({d.description})" if d.description else "") for d in self.devices]
        self.n_threads = n_threads or available_cores()
        self.cache_dir = None
        if cache_dir is not None:
            cache = Path(cache_dir)
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UsageError(f"--cache {cache}: cannot create it ({e.strerror})") from None
            if not os.access(cache, os.W_OK):
                raise UsageError(f"--cache {cache}: not writable")
            self.cache_dir = str(cache)

    def run(self) -> None:
        from .runtime import rpc

        rpc.serve_forever(self.host, self.port, self.devices, self.cache_dir, self.n_threads)
