"""Chat templates from model files, rendered in a Jinja sandbox: a GGUF is untrusted input.

The sandbox blocks attribute access to Python internals; on top of it we bound what a hostile
template can cost: repetition and power operators on big operands, output size, and render time.

Render time is bounded two ways. In the main thread (the CLI) a SIGALRM timer interrupts the
render. Signals reach only the main thread, so elsewhere (a server's request threads) the render
runs in a helper process (``python -m dlmcli.template``) that is killed when it overruns and
started again for the next render; it also runs under a memory limit. It lives as long as its
parent, is reused across renders, and costs a pipe round trip per render.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime

from .errors import TemplateError

MAX_OUTPUT = 1 << 20  # characters a rendered prompt may have
MAX_SECONDS = 2.0  # a chat template renders in microseconds; anything slower is hostile or broken
MAX_REPEAT = 1 << 16  # largest operand of '*' and exponent of '**'
HELPER_MEMORY = 1 << 30  # address space the helper process may use (bytes)

_ENV = None


class TemplateTimeout(Exception):
    pass


def _env():
    global _ENV
    if _ENV is None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class BoundedEnvironment(ImmutableSandboxedEnvironment):
            intercepted_binops = frozenset(["*", "**"])

            def call_binop(self, context, operator, left, right):
                if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                    raise OverflowError("exponent too large for a chat template")
                if operator == "*":
                    for a, b in ((left, right), (right, left)):
                        if isinstance(a, (str, list, tuple)) and isinstance(b, int) and len(a) * b > MAX_REPEAT:
                            raise OverflowError("repetition too large for a chat template")
                return super().call_binop(context, operator, left, right)

        env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message):
            raise TemplateError(f"the model's chat template refused the conversation: {message}")

        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
        _ENV = env
    return _ENV


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """The template compiled once (1 ms for a 151-character template, more for real ones) and reused
    by every render: each generate, chat turn and request renders the same few. A template that fails
    to compile raises each time (lru_cache keeps no exceptions)."""
    return _env().from_string(template)


class _deadline:
    """Raise TemplateTimeout in the main thread after MAX_SECONDS (no-op elsewhere)."""

    def __enter__(self):
        self.armed = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        if self.armed:
            def on_alarm(*_):
                raise TemplateTimeout()

            self.old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, MAX_SECONDS)
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


def render_chat(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """Render a conversation with the model's template; any failure is the template's, not a crash.
    Bounded in time in any thread (see the module's docstring)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return _HELPER.render(dict(template=template, messages=messages, bos_token=bos_token,
                                   eos_token=eos_token, add_generation_prompt=add_generation_prompt))
    return _render_here(template, messages, bos_token=bos_token, eos_token=eos_token,
                        add_generation_prompt=add_generation_prompt)


def _render_here(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                 add_generation_prompt: bool = True) -> str:
    from jinja2.exceptions import SecurityError

    try:
        with _deadline():
            tpl = _compiled(template)
            out, size = [], 0
            for chunk in tpl.generate(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                      add_generation_prompt=add_generation_prompt):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateError(f"the model's chat template produced over {MAX_OUTPUT} characters")
                out.append(chunk)
            return "".join(out)
    except TemplateError:
        raise
    except TemplateTimeout:
        raise TemplateError(f"the model's chat template took over {MAX_SECONDS:g}s to render") from None
    except SecurityError as e:
        raise TemplateError(f"the model's chat template tried something unsafe and was stopped ({e})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # untrusted code: whatever it raises is the file's fault
        raise TemplateError(f"the model's chat template failed to render ({type(e).__name__}: {e})") from None


def _timeout_error() -> TemplateError:
    return TemplateError(f"the model's chat template took over {MAX_SECONDS:g}s to render")


class _Helper:
    """The helper process that renders templates for threads other than the main one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen([sys.executable, "-m", "dlmcli.template"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)

    def render(self, request: dict) -> str:
        data = json.dumps(request).encode()
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None  # both are pipes (_start)
            try:
                proc.stdin.write(struct.pack("<I", len(data)) + data)
                proc.stdin.flush()
                reply = _read_frame(proc.stdout, time.monotonic() + MAX_SECONDS + _STARTUP_GRACE)
            except (OSError, TimeoutError, EOFError) as e:
                self._kill()
                if isinstance(e, TimeoutError):
                    raise _timeout_error() from None
                raise TemplateError("the model's chat template crashed its renderer (out of memory?)") from None
        obj = json.loads(reply)
        if "text" in obj:
            return obj["text"]
        if obj.get("timeout"):
            raise _timeout_error()
        raise TemplateError(obj["error"])

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()


_STARTUP_GRACE = 5.0  # the first render also waits for the helper's interpreter to start


def _read_frame(stream, deadline: float) -> bytes:
    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stream], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(stream.fileno(), n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    (n,) = struct.unpack("<I", read(4))
    return read(n)


_HELPER = _Helper()


def _serve() -> None:
    """The helper's loop: one length-prefixed JSON request in, one reply out, until stdin closes."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    _env()  # import jinja2 before the first request
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        req = json.loads(inp.read(struct.unpack("<I", head)[0]))
        reply: dict[str, object]
        try:
            reply = {"text": _render_here(req.pop("template"), req.pop("messages"), **req)}
        except TemplateError as e:
            reply = {"error": str(e), "timeout": "took over" in str(e)}
        except MemoryError:
            reply = {"error": "the model's chat template ran out of memory"}
        data = json.dumps(reply).encode()
        out.write(struct.pack("<I", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    _serve()
