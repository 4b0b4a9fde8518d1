"""`dlm serve` as a real process on a free loopback port, driven by the official openai client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import ROOT, sigint_default

openai = pytest.importorskip("openai")


class Server:
    def __init__(self, *args, env=None):
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        full_env.pop("DLM_API_KEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "dlmcli", "serve", "--port", "0", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, preexec_fn=sigint_default)
        self.banner = []
        deadline = time.monotonic() + 60
        while True:
            line = self.proc.stderr.readline().decode()
            self.banner.append(line)
            m = re.search(r"on http://(\S+) ", line)
            if m:
                self.url = f"http://{m.group(1)}"
                break
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("the server did not start: " + "".join(self.banner) +
                                     self.proc.stderr.read().decode())
        self._err = []
        self._reader = threading.Thread(target=lambda: self._err.extend(iter(self.proc.stderr.readline, b"")),
                                        daemon=True)
        self._reader.start()

    def client(self, key="unused", **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120, **kw)

    def http(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def metrics(self) -> str:
        return self.http("GET", "/metrics")[2].decode()

    def stderr(self) -> str:
        return b"".join(self._err).decode()

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc


OPENAI_FIELDS = {"model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                 "seed", "stop", "n", "stream", "stream_options", "extra_body"}


def split(req: dict) -> dict:
    """The client's own arguments, and the diffusion settings through extra_body (as a user passes them)."""
    out = {k: v for k, v in req.items() if k in OPENAI_FIELDS}
    extra = {k: v for k, v in req.items() if k not in OPENAI_FIELDS}
    if extra:
        out["extra_body"] = {**out.get("extra_body", {}), **extra}
    return out


def chat(c, **req):
    return c.chat.completions.create(**split(req))


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, (name, text)
    return float(m.group(1))


@pytest.fixture(scope="module")
def slow_gguf(tmp_path_factory):
    """A random model with room for long canvases: a 1024-step run lasts seconds."""
    from tools.ggufgen import write_random_gguf

    path = tmp_path_factory.mktemp("serve") / "long.gguf"
    write_random_gguf(path, "llada", seed=5, context_length=2048)
    return path


@pytest.fixture(scope="module")
def server(slow_gguf):
    s = Server("-m", "tiny-llada", "-m", "tiny-dream", "-m", slow_gguf, "--max-batch", "16")
    yield s
    assert s.stop() == 0, s.stderr()


LLADA = dict(model="tiny-llada", messages=[{"role": "user", "content": "reverse hello"}], temperature=0)
DREAM = dict(model="tiny-dream", messages=[{"role": "user", "content": "add 12 30"}], temperature=0)


def test_models_health_and_plain_chat(server):
    c = server.client()
    assert sorted(m.id for m in c.models.list()) == ["long", "tiny-dream", "tiny-llada"]
    assert json.loads(server.http("GET", "/health")[2])["status"] == "ok"
    r = chat(c, **LLADA)
    assert r.choices[0].message.content == "olleh" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    r = chat(c, **DREAM)
    assert r.choices[0].message.content == "42"


def _stream_text(stream):
    parts, finish = [], None
    for chunk in stream:
        for ch in chunk.choices:
            parts.append(getattr(ch, "delta", None) and ch.delta.content or getattr(ch, "text", None) or "")
            finish = ch.finish_reason or finish
    return "".join(parts), finish


def test_streamed_chat_equals_plain(server):
    c = server.client()
    for req in (LLADA, DREAM, dict(LLADA, max_tokens=24, steps=24, seed=3, temperature=0.9)):
        plain = chat(c, **req)
        text, finish = _stream_text(chat(c, **req, stream=True))
        assert (text, finish) == (plain.choices[0].message.content, plain.choices[0].finish_reason)


def test_completions_plain_and_streamed(server):
    """A completion is the raw prompt (no template): its answer is `dlm generate --raw`'s."""
    from .conftest import run_dlm

    want = run_dlm("generate", "-m", "tiny-llada", "--raw", "-t", "0", "reverse hello").stdout.decode()[:-1]
    c = server.client()
    r = c.completions.create(model="tiny-llada", prompt="reverse hello", temperature=0)
    assert r.choices[0].text == want and r.object == "text_completion"
    text, finish = _stream_text(c.completions.create(model="tiny-llada", prompt="reverse hello", temperature=0,
                                                     stream=True))
    assert (text, finish) == (want, r.choices[0].finish_reason)


def test_stop_strings_and_n_choices(server):
    c = server.client()
    r = chat(c, **LLADA, stop=["ll"])
    assert r.choices[0].message.content == "o" and r.choices[0].finish_reason == "stop"
    text, _ = _stream_text(chat(c, **LLADA, stop=["ll"], stream=True))
    assert text == "o"
    r = chat(c, **dict(LLADA, temperature=1.0, seed=11), n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    alone = chat(c, **dict(LLADA, temperature=1.0, seed=11))
    assert r.choices[0].message.content == alone.choices[0].message.content


def test_denoising_stream_rebuilds_the_canvas(server):
    c = server.client()
    plain = chat(c, **LLADA, max_tokens=16)
    stream = chat(c, **LLADA, max_tokens=16, stream=True,
                                       extra_body={"stream_denoising": True})
    canvas, steps, text = None, [], ""
    for chunk in stream:
        ch = chunk.choices[0]
        info = (ch.model_extra or {}).get("dlm")
        text += ch.delta.content or ""
        if info and "gen_length" in info:
            canvas = [None] * info["gen_length"]
        elif info:
            steps.append(info)
            for com in info["committed"]:
                assert canvas[com["position"]] is None  # a commit is never undone
                canvas[com["position"]] = com
    assert text == plain.choices[0].message.content == "olleh"
    assert [s["step"] for s in steps] == list(range(len(steps))) and steps[-1]["masks_left"] == 0
    assert None not in canvas
    answer = []
    for com in canvas:
        if com["eog"]:
            break
        answer.append(com["text"])
    assert "".join(answer) == text
    assert all(0 <= com["score"] <= 1 for com in canvas if com["score"] is not None)


def _alone_and_mixed_requests():
    reqs = []
    for i in range(16):
        base = LLADA if i % 2 == 0 else DREAM
        reqs.append(dict(base, max_tokens=[8, 16, 32][i % 3], seed=i,
                         temperature=0 if i % 4 < 2 else 0.8))
    return reqs


@pytest.mark.slow
def test_16_concurrent_streams_share_passes_and_get_their_alone_answers(server):
    c = server.client()
    reqs = _alone_and_mixed_requests()
    alone = [chat(c, **r).choices[0].message.content for r in reqs]
    before = server.metrics()
    barrier = threading.Barrier(len(reqs))

    def one(r):
        barrier.wait()
        return _stream_text(chat(c, **r, stream=True))[0]

    with ThreadPoolExecutor(len(reqs)) as pool:
        together = list(pool.map(one, reqs))
    assert together == alone
    assert alone[0] == "olleh" and alone[1] == "42"
    after = server.metrics()
    shared = metric(after, "dlm_pass_sequences_count") - metric(after, 'dlm_pass_sequences_bucket{le="1"}')
    shared_before = metric(before, "dlm_pass_sequences_count") - metric(before, 'dlm_pass_sequences_bucket{le="1"}')
    assert shared > shared_before  # passes that held more than one sequence


@pytest.mark.slow
def test_a_client_that_disconnects_frees_its_sequence(server):
    c = server.client()
    stream = chat(c, model="long", messages=[{"role": "user", "content": "hi"}], max_tokens=1024, steps=1024,
                  temperature=0, stream=True, early_stop=False, stream_denoising=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    assert metric(server.metrics(), 'dlm_active_sequences{model="long"}') == 1
    stream.close()
    deadline = time.monotonic() + 30
    while metric(server.metrics(), 'dlm_active_sequences{model="long"}') != 0:
        assert time.monotonic() < deadline, "the sequence stayed in the pass"
        time.sleep(0.05)
    passes = metric(server.metrics(), "dlm_pass_sequences_count")
    time.sleep(0.3)
    assert metric(server.metrics(), "dlm_pass_sequences_count") == passes  # no pass runs for nobody


BAD = [
    ("POST", "/v1/chat/completions", b"{not json", 400, None),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400, None),
    ("POST", "/v1/chat/completions", {"model": "tiny-llada", "messages": []}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "tiny-llada"}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "tiny-llada", "messages": [{"role": "wizard", "content": "x"}]},
     400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "tiny-llada", "messages": [{"role": "user", "content": 5}]},
     400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ("POST", "/v1/chat/completions", {"model": 7, "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ("POST", "/v1/chat/completions", dict(LLADA, max_tokens="ten"), 400, "max_tokens"),
    ("POST", "/v1/chat/completions", dict(LLADA, max_tokens=0), 400, "max_tokens"),
    ("POST", "/v1/chat/completions", dict(LLADA, max_tokens=100000), 400, "max_tokens"),
    ("POST", "/v1/chat/completions", dict(LLADA, messages=[{"role": "user", "content": "x " * 5000}]), 400,
     "max_tokens"),
    ("POST", "/v1/chat/completions", dict(LLADA, temperature=-1), 400, "temperature"),
    ("POST", "/v1/chat/completions", dict(LLADA, temperature=True), 400, "temperature"),
    ("POST", "/v1/chat/completions", dict(LLADA, top_p=0), 400, "top_p"),
    ("POST", "/v1/chat/completions", dict(LLADA, steps=0), 400, "steps"),
    ("POST", "/v1/chat/completions", dict(LLADA, max_tokens=32, block_length=8, steps=6), 400, "steps"),
    ("POST", "/v1/chat/completions", dict(LLADA, algorithm="best"), 400, "algorithm"),
    ("POST", "/v1/chat/completions", dict(LLADA, seed=-1), 400, "seed"),
    ("POST", "/v1/chat/completions", dict(LLADA, n=0), 400, "n"),
    ("POST", "/v1/chat/completions", dict(LLADA, stop=[1]), 400, "stop"),
    ("POST", "/v1/chat/completions", dict(LLADA, stream="yes"), 400, "stream"),
    ("POST", "/v1/chat/completions", dict(LLADA, stream_denoising=True), 400, "stream_denoising"),
    ("POST", "/v1/chat/completions", dict(LLADA, tools=[{"type": "function"}]), 400, "tools"),
    ("POST", "/v1/completions", {"model": "tiny-llada", "prompt": {"a": 1}}, 400, "prompt"),
    ("POST", "/v1/completions", {"model": "tiny-llada", "prompt": [10 ** 9]}, 400, "prompt"),
    ("POST", "/v1/completions", "oversized", 413, None),
    ("GET", "/v1/chat/completions", None, 405, None),
    ("GET", "/v1/nothing", None, 404, None),
]


def oversized(server, path):
    """A body over the limit: the answer comes before the client has sent it all."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5 << 20))
    conn.endheaders(b'{"model": "tiny-llada", "prompt": "' + b"x" * 1000)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


@pytest.mark.parametrize("method,path,body,status,param", BAD, ids=range(len(BAD)))
def test_bad_input_is_a_4xx_error_object(server, method, path, body, status, param):
    if body == "oversized":
        code, data = oversized(server, path)
    else:
        raw = body if isinstance(body, bytes) else None
        code, _headers, data = server.http(method, path, None if raw else body, raw=raw)
    assert code == status, data
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    assert "Traceback" not in server.stderr()
    assert chat(server.client(), **LLADA).choices[0].message.content == "olleh"


def test_messages_name_the_field_not_the_flag(server):
    _, _, data = server.http("POST", "/v1/chat/completions", dict(LLADA, max_tokens=32, block_length=8, steps=6))
    msg = json.loads(data)["error"]["message"]
    assert msg.startswith("steps 6 ") and "--" not in msg


@pytest.mark.slow
def test_api_key_guards_everything_but_health(tmp_path):
    s = Server("-m", "tiny-llada", env={"DLM_API_KEY": "sekrit"})
    try:
        assert s.http("GET", "/health")[0] == 200
        code, _, data = s.http("GET", "/v1/models")
        assert code == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
        assert s.http("GET", "/metrics")[0] == 401
        assert s.http("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        with pytest.raises(openai.AuthenticationError):
            chat(s.client("wrong"), **LLADA)
        assert chat(s.client("sekrit"), **LLADA).choices[0].message.content == "olleh"
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_binding_beyond_loopback_without_a_key_warns():
    s = Server("-m", "tiny-llada", "--host", "0.0.0.0")
    try:
        assert any("Warning: serving on 0.0.0.0 without --api-key" in line for line in s.banner)
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after(slow_gguf):
    s = Server("-m", slow_gguf, "--max-batch", "1", "--max-queue", "0")
    try:
        long = dict(model="long", messages=[{"role": "user", "content": "hi"}], max_tokens=1024, steps=1024,
                    early_stop=False, stream=True)
        stream = chat(s.client(), **long)
        next(iter(stream))
        code, headers, data = s.http("POST", "/v1/chat/completions", dict(long, stream=False))
        assert code == 503 and headers.get("Retry-After") == "1"
        assert json.loads(data)["error"]["code"] == "overloaded"
        stream.close()
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_shutdown_lets_running_requests_finish(slow_gguf, sig, code):
    s = Server("-m", slow_gguf, "--shutdown-timeout", "60")
    req = dict(model="long", messages=[{"role": "user", "content": "hi"}], max_tokens=256, steps=256,
               temperature=0, early_stop=False)
    want = chat(s.client(), **req).choices[0].message.content
    stream = chat(s.client(), **req, stream=True, stream_denoising=True)
    it = iter(stream)
    next(it)
    next(it)
    s.proc.send_signal(sig)
    rest = "".join((ch.choices[0].delta.content or "") for ch in it if ch.choices)
    # The one signal sent is enough: a second one, sent while the server cleans up (its handlers gone),
    # would kill it (143) on a loaded machine.
    assert s.proc.wait(60) == code
    s.stop()
    assert rest == want
    assert "Traceback" not in s.stderr()


def test_ollama_generate_and_chat(server):
    code, _, data = server.http("POST", "/api/generate", {"model": "tiny-llada", "prompt": "reverse hello",
                                                         "stream": False, "options": {"temperature": 0}})
    obj = json.loads(data)
    assert code == 200 and obj["response"] == "olleh" and obj["done"] and obj["eval_count"] == 5
    code, headers, data = server.http("POST", "/api/chat", {
        "model": "tiny-dream", "messages": [{"role": "user", "content": "add 12 30"}],
        "options": {"temperature": 0, "num_predict": 16, "steps": 16}})
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert code == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert "".join(x["message"]["content"] for x in lines) == "42"
    assert [x["done"] for x in lines][-1] is True and not any(x["done"] for x in lines[:-1])
    code, _, data = server.http("POST", "/api/chat", {"model": "tiny-dream", "messages": [],
                                                     "options": {"num_predict": "many"}})
    assert code == 400 and json.loads(data)["error"]["param"] == "max_tokens"
