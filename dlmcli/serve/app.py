"""The HTTP side of ``dlm serve``: OpenAI's completions API over the shared-pass workers.

Starlette (the ASGI toolkit under FastAPI) is used directly: the OpenAI schema needs its own
validation and error objects anyway, and streaming, a body-size limit and auth are a few lines
each. Handlers parse and check a request, tokenize its prompt off the event loop, submit its
sequences to the model's worker, and turn the Steps that come back into JSON or SSE chunks.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import numbers
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.params import MAX_LENGTH, GenerationParams, _divisor_near
from ..errors import DlmError, GenerationError, UsageError
from ..render.text import unit_confidence
from .answer import Answer
from .metrics import Metrics
from .worker import ModelWorker, QueueFull, Sequence

if TYPE_CHECKING:
    from ..api import Model

MAX_BODY = 4 << 20  # bytes in a request body
MAX_N = 16  # choices per request
MAX_STOP = 4  # stop strings per request (OpenAI's limit)
PING_S = 1.0  # a stream sends an SSE comment after this long without data, to notice a closed client

# Diffusion settings a request may carry as extra body fields (the CLI's names in snake_case).
INT_FIELDS = ("steps", "block_length", "top_k", "seed")
FLOAT_FIELDS = ("temperature", "top_p", "alg_temp", "threshold", "factor", "cfg", "eps")
STR_FIELDS = ("schedule", "algorithm")
BOOL_FIELDS = ("early_stop",)
# How a parameter is spelled to the client when a message names it.
FIELD_NAMES = {"gen_length": "max_tokens"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=self.headers)


def from_dlm_error(e: DlmError, status: int = 400) -> ApiError:
    name = e.param
    return ApiError(status, e.message_with(lambda n: FIELD_NAMES.get(n, n)),
                    param=FIELD_NAMES.get(name, name) if name else None)


@dataclass
class Served:
    """One loaded model and the worker that owns it."""

    id: str
    model: Model
    worker: ModelWorker
    aliases: tuple = ()


@dataclass
class ServerState:
    models: dict[str, Served]
    defaults: dict = field(default_factory=dict)  # the CLI's generation flags: server-wide defaults
    api_key: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)

    def find(self, name) -> Served:
        if name is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        if not isinstance(name, str):
            raise ApiError(400, "'model' must be a string naming a served model (see GET /v1/models)",
                           param="model")
        for s in self.models.values():
            if name == s.id or name in s.aliases:
                return s
        raise ApiError(404, f"The model '{name}' does not exist here; this server has "
                            f"{', '.join(sorted(self.models))} (see GET /v1/models)",
                       param="model", code="model_not_found")


# --- request parsing -----------------------------------------------------------------------------

async def read_json(request: Request) -> dict:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY:
        raise ApiError(413, f"the request body is over {MAX_BODY} bytes", code="body_too_large")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes", code="body_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return body


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _int(body, name, lo=None, hi=None):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"'{name}' must be an integer (got {json.dumps(v)[:40]})", param=name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ApiError(400, f"'{name}' must be between {lo} and {hi} (got {v})", param=name)
    return v


def _float(body, name):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ApiError(400, f"'{name}' must be a number (got {json.dumps(v)[:40]})", param=name)
    return float(v)


def _bool(body, name, default=False):
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"'{name}' must be true or false", param=name)
    return v


@dataclass
class Job:
    served: Served
    prompt_tokens: list[int]
    params: GenerationParams
    n: int
    stop: list[str]
    stream: bool
    include_usage: bool
    denoising: bool


def parse_options(body: dict, served: Served, state: ServerState) -> tuple[dict, int, list[str], bool, bool, bool]:
    for name in ("tools", "functions", "tool_choice"):
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported: diffusion models here answer with text only", param=name)
    if body.get("logprobs"):
        raise ApiError(400, "'logprobs' is not supported", param="logprobs")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise ApiError(400, "'response_format' can only be {\"type\": \"text\"}", param="response_format")
    over = dict(state.defaults)
    length = _int(body, "max_completion_tokens", 1, MAX_LENGTH)
    if length is None:
        length = _int(body, "max_tokens", 1, MAX_LENGTH)
    if length is not None:
        over["gen_length"] = length
    for name in INT_FIELDS:
        v = _int(body, name)
        if v is not None:
            over[name] = v
    for name in FLOAT_FIELDS:
        v = _float(body, name)
        if v is not None:
            over[name] = v
    for name in STR_FIELDS:
        v = body.get(name)
        if v is not None:
            if not isinstance(v, str):
                raise ApiError(400, f"'{name}' must be a string", param=name)
            over[name] = v
    if body.get("early_stop") is not None:
        over["early_stop"] = _bool(body, "early_stop")
    n = _int(body, "n", 1, MAX_N) or 1
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) for s in stop)):
        raise ApiError(400, f"'stop' must be a string or a list of up to {MAX_STOP} strings", param="stop")
    stream = _bool(body, "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    include_usage = bool(so and so.get("include_usage"))
    denoising = _bool(body, "stream_denoising")
    if denoising and not stream:
        raise ApiError(400, "'stream_denoising' needs \"stream\": true", param="stream_denoising")
    return over, n, stop, stream, include_usage, denoising


def resolve_params(model, over: dict):
    """The request's GenerationParams. A block schedule whose default block does not divide the
    asked length (max_tokens 100 with blocks of 32) gets the nearest block length that does."""
    try:
        if "gen_length" in over and "block_length" not in over:
            base = model.params(**{k: v for k, v in over.items() if k not in ("gen_length", "steps")})
            if base.schedule == "block":
                length = over["gen_length"]
                block = min(base.block_length, length)
                if length % block:
                    over = dict(over, block_length=_divisor_near(length, block))
        return model.params(**over)
    except DlmError as e:
        raise from_dlm_error(e) from None


def chat_messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        raise ApiError(400, "'messages' must be a list of {role, content} objects", param="messages")
    if not msgs:
        raise ApiError(400, "'messages' is empty: give at least one message", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object", param="messages")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{i}].role must be system, developer, user, assistant or tool "
                                f"(got {json.dumps(role)[:40]})", param="messages")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise ApiError(400, f"messages[{i}].content: only text parts are supported", param="messages")
                parts.append(part["text"])
            content = "".join(parts)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts",
                           param="messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def completion_prompt(body: dict):
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, str):
        return p
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        return [int(t) for t in p]
    raise ApiError(400, "'prompt' must be a string (or a list of one string, or of token ids)", param="prompt")


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{what} holds lone surrogates; send valid UTF-8", param=what) from None


# --- running a job -------------------------------------------------------------------------------

class Run:
    """A submitted job: its sequences, their answers, and a queue of events from the worker."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop):
        self.job = job
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        m = job.served.model
        vocab = m.vocab_info
        gen_start = len(job.prompt_tokens)
        self.answers = [Answer(m.runtime.piece, vocab.mask_id, vocab.eog_ids, gen_start, job.stop)
                        for _ in range(job.n)]
        canvas = m._canvas(job.prompt_tokens, job.params)
        self.seqs = [Sequence(canvas.copy(), gen_start, job.params, self._sender("step", i), self._sender("end", i),
                              seed_index=i) for i in range(job.n)]
        self.ended = [False] * job.n

    def _sender(self, kind, i):
        def send(payload):
            try:
                self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, i, payload))
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                pass
        return send

    def submit(self) -> None:
        try:
            self.job.served.worker.submit(self.seqs)
        except QueueFull as e:
            raise ApiError(503, f"the server is busy ({e}); retry shortly", type="server_error",
                           code="overloaded", headers={"Retry-After": "1"}) from None

    def cancel(self) -> None:
        for s in self.seqs:
            self.job.served.worker.cancel(s)

    async def events_until_done(self, ping: float | None = None):
        """Yield (kind, i, payload) until every choice ended; ("ping", ...) after PING of silence."""
        while not all(self.ended):
            try:
                kind, i, payload = await asyncio.wait_for(self.events.get(), ping) if ping else \
                    await self.events.get()
            except asyncio.TimeoutError:
                yield "ping", -1, None
                continue
            if kind == "step":
                ans = self.answers[i]
                if ans.final:
                    continue
                delta = ans.update(payload)
                if ans.final:
                    self.job.served.worker.cancel(self.seqs[i])  # leaves at the next step
                    self.ended[i] = True
                yield "step", i, (payload, delta)
            else:
                if self.ended[i]:
                    continue
                self.ended[i] = True
                ans = self.answers[i]
                if payload is not None:
                    yield "error", i, payload
                    return
                if not ans.final:  # finished without a last full canvas: cannot happen, but be safe
                    ans.finish_reason = "length"
                yield "end", i, ans._release()

    def usage(self) -> dict:
        done = sum(len(a.tokens) for a in self.answers)
        return {"prompt_tokens": len(self.job.prompt_tokens), "completion_tokens": done,
                "total_tokens": len(self.job.prompt_tokens) + done}


def _engine_error(e: BaseException) -> ApiError:
    from ..memory import MemoryCheckError, gib

    if isinstance(e, MemoryCheckError):  # the operator's flags do not help a client: say what does
        where = "GPU memory" if e.gpu else "memory"
        return ApiError(503, f"the server has too little {where} for this pass ({e.n_tokens} positions over the "
                        f"requests running together need about {gib(e.need)}, {gib(e.free)} is free); ask for "
                        f"fewer max_tokens, or retry when fewer requests run", type="server_error",
                        code="out_of_memory")
    if isinstance(e, DlmError):
        return ApiError(500, str(e), type="server_error", code="generation_failed")
    return ApiError(500, f"internal error ({type(e).__name__})", type="server_error")


def denoising_info(served: Served, step, gen_start: int, algorithm: str) -> dict:
    """One pass of the denoising stream: the positions committed (offsets in the answer's region),
    their tokens, text and confidence (raw, and on the view's 0..1 colour scale), the masks left."""
    m = served.model
    eog = m.vocab_info.eog_ids
    score = unit_confidence(step.confidences, algorithm)
    committed = []
    for pos, tok, conf, u in zip(step.positions.tolist(), step.tokens.tolist(), step.confidences.tolist(),
                                 score.tolist()):
        committed.append({"position": pos - gen_start, "token": tok,
                          "text": m.runtime.piece(tok).decode("utf-8", "replace"), "eog": tok in eog,
                          "confidence": None if math.isnan(conf) else conf,
                          "score": None if math.isnan(u) else round(u, 4)})
    return {"step": step.index, "steps": step.planned_steps, "block": step.block, "n_blocks": step.n_blocks,
            "committed": committed, "masks_left": step.masks_left, "batch": step.batch}


class Handler:
    def __init__(self, state: ServerState):
        self.state = state

    async def prepare(self, request: Request, chat: bool) -> tuple[Job, str]:
        return await self.prepare_body(await read_json(request), chat)

    async def prepare_body(self, body: dict, chat: bool) -> tuple[Job, str]:
        served = self.state.find(body.get("model"))
        over, n, stop, stream, include_usage, denoising = parse_options(body, served, self.state)
        model = served.model
        if chat:
            messages = chat_messages(body)
            for m in messages:
                _check_text(m["content"], "messages")
        else:
            prompt = completion_prompt(body)
            if isinstance(prompt, str):
                _check_text(prompt, "prompt")
        params = resolve_params(model, over)

        def tokens():
            try:
                if chat:
                    return model.chat_tokens(messages)
                if isinstance(prompt, list):
                    bad = [t for t in prompt if not 0 <= t < model.runtime.model.n_vocab]
                    if bad:
                        raise ApiError(400, f"'prompt' holds token ids outside the vocabulary ({bad[0]})",
                                       param="prompt")
                    return prompt
                return model.prompt_tokens(prompt, raw=True)
            except DlmError as e:
                err = from_dlm_error(e)
                err.param = err.param or ("messages" if chat else "prompt")
                raise err from None

        prompt_tokens = await run_in_threadpool(tokens)
        try:
            model._canvas(prompt_tokens, params)
        except (GenerationError, UsageError) as e:
            err = from_dlm_error(e)
            err.param = err.param if isinstance(e, UsageError) else "max_tokens"
            raise err from None
        job = Job(served, prompt_tokens, params, n, stop, stream, include_usage, denoising)
        return job, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]

    async def complete(self, request: Request, chat: bool) -> Response:
        t0 = time.monotonic()
        job, rid = await self.prepare(request, chat)
        run = Run(job, asyncio.get_running_loop())
        run.submit()
        created = int(time.time())
        if job.stream:
            return StreamingResponse(self._stream(run, rid, created, chat, t0), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            waiter = asyncio.ensure_future(self._collect(run))
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=0.5)
                if done:
                    break
                if await request.is_disconnected():
                    waiter.cancel()
                    run.cancel()
                    return Response(status_code=499)
            waiter.result()
        finally:
            run.cancel()
        self.state.metrics.observe_request(time.monotonic() - t0, len(job.prompt_tokens),
                                           run.usage()["completion_tokens"])
        choices = []
        for i, a in enumerate(run.answers):
            c: dict[str, Any] = {"index": i, "finish_reason": a.finish_reason, "logprobs": None}
            if chat:
                c["message"] = {"role": "assistant", "content": a.text}
            else:
                c["text"] = a.text
            c["dlm"] = {"steps": a.steps}
            choices.append(c)
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": job.served.id, "choices": choices,
                             "usage": run.usage()})

    async def _collect(self, run: Run) -> None:
        async for kind, _i, payload in run.events_until_done():
            if kind == "error":
                raise _engine_error(payload)

    async def _stream(self, run: Run, rid: str, created: int, chat: bool, t0: float):
        job = run.job
        obj = "chat.completion.chunk" if chat else "text_completion"
        gen_start = len(job.prompt_tokens)

        def chunk(i, text=None, finish=None, role=False, extra=None):
            choice = {"index": i, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
            else:
                choice["text"] = text or ""
            if extra is not None:
                choice["dlm"] = extra
            out = {"id": rid, "object": obj, "created": created, "model": job.served.id, "choices": [choice]}
            if job.include_usage:
                out["usage"] = None
            return "data: " + json.dumps(out, ensure_ascii=False) + "\n\n"

        try:
            p = job.params
            start = {"gen_length": p.gen_length, "steps": p.steps, "schedule": p.schedule,
                     "block_length": p.block_length if p.schedule == "block" else p.gen_length,
                     "algorithm": p.algorithm, "mask": "\u2591"} if job.denoising else None
            for i in range(job.n):
                if chat or job.denoising:
                    yield chunk(i, "", role=chat, extra=start)
            async for kind, i, payload in run.events_until_done(ping=PING_S):
                if kind == "ping":
                    yield ": ping\n\n"
                elif kind == "step":
                    step, delta = payload
                    ans = run.answers[i]
                    info = denoising_info(job.served, step, gen_start, p.algorithm) if job.denoising else None
                    if delta or info is not None:
                        yield chunk(i, delta or (None if chat else ""), extra=info)
                    if ans.final:
                        yield chunk(i, None if chat else "", finish=ans.finish_reason)
                elif kind == "end":
                    if payload:
                        yield chunk(i, payload)
                    yield chunk(i, None if chat else "", finish=run.answers[i].finish_reason)
                elif kind == "error":
                    e = _engine_error(payload)
                    yield "data: " + json.dumps({"error": {"message": e.message, "type": e.type, "param": None,
                                                           "code": e.code}}) + "\n\n"
                    return
            if job.include_usage:
                yield "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": job.served.id,
                                             "choices": [], "usage": run.usage()}) + "\n\n"
            yield "data: [DONE]\n\n"
            self.state.metrics.observe_request(time.monotonic() - t0, len(job.prompt_tokens),
                                               run.usage()["completion_tokens"])
        finally:
            run.cancel()  # a client that went away frees its sequences at the next step


    # --- Ollama's API: what many local front-ends speak ------------------------------------------
    async def ollama(self, request: Request, chat: bool) -> Response:
        """/api/chat and /api/generate: the same jobs, Ollama's field names, NDJSON streaming."""
        t0 = time.monotonic()
        body = await read_json(request)
        opts = body.get("options") or {}
        if not isinstance(opts, dict):
            raise ApiError(400, "'options' must be an object", param="options")
        oa: dict[str, Any] = {"model": body.get("model"), "stream": body.get("stream", True)}
        for name, value in opts.items():
            oa[OLLAMA_OPTIONS.get(name) or name] = value
        oa = {k: v for k, v in oa.items() if k in OLLAMA_FIELDS}
        if chat:
            oa["messages"] = body.get("messages")
        elif body.get("raw"):
            oa["prompt"] = body.get("prompt")
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise ApiError(400, "'prompt' must be a string", param="prompt")
            system = body.get("system")
            if system is not None and not isinstance(system, str):
                raise ApiError(400, "'system' must be a string", param="system")
            oa["messages"] = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": prompt}]
        job, _rid = await self.prepare_body(oa, chat or "messages" in oa)
        run = Run(job, asyncio.get_running_loop())
        run.submit()
        model = job.served.id

        def line(text: str, done: bool, answer=None) -> str:
            out: dict[str, Any] = {"model": model, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            out["done"] = done
            if done:
                usage = run.usage()
                out.update(done_reason=answer.finish_reason, total_duration=int((time.monotonic() - t0) * 1e9),
                           prompt_eval_count=usage["prompt_tokens"], eval_count=usage["completion_tokens"])
            return json.dumps(out, ensure_ascii=False) + "\n"

        async def events():
            try:
                async for kind, _i, payload in run.events_until_done():
                    if kind == "step" and payload[1]:
                        yield line(payload[1], False)
                    elif kind == "end" and payload:
                        yield line(payload, False)
                    elif kind == "error":
                        yield json.dumps({"error": _engine_error(payload).message}) + "\n"
                        return
                yield line("", True, run.answers[0])
            finally:
                run.cancel()

        if job.stream:
            return StreamingResponse(events(), media_type="application/x-ndjson")
        try:
            await self._collect(run)
        finally:
            run.cancel()
        return Response(line(run.answers[0].text, True, run.answers[0]), media_type="application/json")


# Ollama's option names that differ from ours; the rest (temperature, top_p, top_k, seed, stop, and
# the diffusion settings) are the same.
OLLAMA_OPTIONS: dict[str, str] = {"num_predict": "max_tokens"}
OLLAMA_FIELDS = {"model", "stream", "max_tokens", "stop", *INT_FIELDS, *FLOAT_FIELDS, *STR_FIELDS, *BOOL_FIELDS}


def build_app(state: ServerState) -> Starlette:
    h = Handler(state)
    metrics = state.metrics

    def endpoint(name, fn):
        async def wrapped(request: Request) -> Response:
            try:
                resp = await fn(request)
            except ApiError as e:
                resp = e.response()
            metrics.count_request(name, resp.status_code)
            return resp
        return wrapped

    async def chat(request):
        return await h.complete(request, chat=True)

    async def completions(request):
        return await h.complete(request, chat=False)

    async def ollama_chat(request):
        return await h.ollama(request, chat=True)

    async def ollama_generate(request):
        return await h.ollama(request, chat=False)

    async def ollama_tags(request):
        return JSONResponse({"models": [{"name": s.id, "model": s.id, "details": {"family": s.model.arch}}
                                        for s in state.models.values()]})

    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": s.id, "object": "model", "created": int(state.started), "owned_by": "dlm",
             "dlm": {"arch": s.model.arch, "context": s.model.n_ctx_train,
                     "defaults": s.model.params().to_dict()}} for s in state.models.values()]})

    async def health(request):
        return JSONResponse({"status": "ok", "models": sorted(state.models)})

    async def prom(request):
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def page(request):
        return HTMLResponse(playground_html(state))

    async def http_error(request, exc: HTTPException):
        msg = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return ApiError(exc.status_code, msg).response()

    async def server_error(request, exc: Exception):
        return ApiError(500, f"internal error ({type(exc).__name__})", type="server_error").response()

    routes = [
        Route("/v1/chat/completions", endpoint("chat.completions", chat), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/health", endpoint("health", health), methods=["GET"]),
        Route("/metrics", endpoint("metrics", prom), methods=["GET"]),
        Route("/", endpoint("playground", page), methods=["GET"]),
        Route("/api/chat", endpoint("ollama.chat", ollama_chat), methods=["POST"]),
        Route("/api/generate", endpoint("ollama.generate", ollama_generate), methods=["POST"]),
        Route("/api/tags", endpoint("ollama.tags", ollama_tags), methods=["GET"]),
    ]
    # Starlette types every handler as taking Exception; http_error is registered for HTTPException only.
    handlers = {HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    if state.api_key:
        app.add_middleware(BearerAuth, key=state.api_key)
    return app


OPEN_PATHS = ("/health", "/")  # the page holds no data; its own requests carry the key typed into it


class BearerAuth:
    """Every path but OPEN_PATHS needs 'Authorization: Bearer KEY' (a pure ASGI middleware, so
    streaming responses pass through untouched)."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            resp = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                            code="invalid_api_key").response()
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


def playground_html(state: ServerState) -> str:
    from ..render.text import _CONF_STOPS, hex_rgb

    page = resources.files("dlmcli.serve").joinpath("playground.html").read_text(encoding="utf-8")
    config = {"models": sorted(state.models), "stops": [hex_rgb(c) for c in _CONF_STOPS],
              "auth": bool(state.api_key)}
    return page.replace("/*CONFIG*/null", json.dumps(config).replace("<", "\\u003c"))
