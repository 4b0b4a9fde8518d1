"""Chat templates from model files, rendered in a Jinja sandbox: a GGUF is untrusted input.

The sandbox blocks attribute access to Python internals; on top of it we bound what a hostile
template can cost: repetition and power operators on big operands, output size, and render time.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime

from .errors import ModelError

MAX_OUTPUT = 1 << 20  # characters a rendered prompt may have
MAX_SECONDS = 2.0  # a chat template renders in microseconds; anything slower is hostile or broken
MAX_REPEAT = 1 << 16  # largest operand of '*' and exponent of '**'

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
            raise ModelError(f"the model's chat template refused the conversation: {message}")

        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
        _ENV = env
    return _ENV


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
    """Render a conversation with the model's template; any failure is the template's, not a crash."""
    from jinja2.exceptions import SecurityError

    hint = "pass --raw to skip the template"
    try:
        with _deadline():
            tpl = _env().from_string(template)
            out, size = [], 0
            for chunk in tpl.generate(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                      add_generation_prompt=add_generation_prompt):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise ModelError(f"the model's chat template produced over {MAX_OUTPUT} characters; {hint}")
                out.append(chunk)
            return "".join(out)
    except ModelError:
        raise
    except TemplateTimeout:
        raise ModelError(f"the model's chat template took over {MAX_SECONDS:g}s to render; {hint}") from None
    except SecurityError as e:
        raise ModelError(f"the model's chat template tried something unsafe and was stopped ({e}); {hint}") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # untrusted code: whatever it raises is the file's fault
        raise ModelError(f"the model's chat template failed to render ({type(e).__name__}: {e}); {hint}") from None
