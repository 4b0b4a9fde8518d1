"""Chat templates from model files, rendered in a Jinja sandbox: a GGUF is untrusted input."""

from __future__ import annotations

from datetime import datetime

from .errors import ModelError

_ENV = None


def _env():
    global _ENV
    if _ENV is None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message):
            raise ModelError(f"the model's chat template refused the conversation: {message}")

        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _ENV = env
    return _ENV


def render_chat(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """Render a conversation with the model's template; any failure is the template's, not a crash."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    try:
        tpl = _env().from_string(template)
        return tpl.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                          add_generation_prompt=add_generation_prompt)
    except ModelError:
        raise
    except SecurityError as e:
        raise ModelError(f"the model's chat template tried something unsafe and was stopped ({e}); "
                         f"pass --raw to skip the template") from None
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as e:
        raise ModelError(f"the model's chat template failed to render ({type(e).__name__}: {e}); "
                         f"pass --raw to skip the template") from None
