"""Exceptions written for users.

The library raises these; the CLI turns each into one ``Error: ...`` line on stderr and an exit code.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM arrived: unwind like a Ctrl-C (the live view gives the terminal back), exit 143.
    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


_MARK = "\x1f"  # brackets a parameter's name inside a message (never in user text: repr escapes it)


def param(name: str) -> str:
    """NAME (a GenerationParams field, say) as it appears in a message: ``steps`` for the library
    and the server, ``--steps`` once the CLI boundary renders it (``DlmError.cli_message``)."""
    return f"{_MARK}{name}{_MARK}"


def _render(message: str, spell) -> str:
    parts = message.split(_MARK)
    return "".join(spell(p) if i % 2 else p for i, p in enumerate(parts))


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


class DlmError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message, saying what to do next.

    ``param``: the parameter at fault, where there is one (a GenerationParams field name; by
    default the first one the message names with ``param()``)."""

    exit_code = 1

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        parts = message.split(_MARK)
        self.param = param or (parts[1] if len(parts) > 2 else None)  # else the first one named

    def __str__(self) -> str:
        return _render(super().__str__(), lambda n: n)

    def cli_message(self) -> str:
        """The message with parameters spelled as the CLI's flags."""
        return _render(super().__str__(), flag_name)

    def message_with(self, spell) -> str:
        """The message with each parameter spelled as ``spell(name)`` (a server's field names)."""
        return _render(super().__str__(), spell)


class UsageError(DlmError):
    """Options that contradict each other or are out of range (exit code 2, like a bad flag)."""

    exit_code = 2


class ModelError(DlmError):
    """The model file cannot be used: missing, not GGUF, not a diffusion model, bad metadata."""


class TemplateError(ModelError):
    """The model's chat template failed to render. The message names no flag: what skips the template
    depends on the caller (``generate --raw``; infill without ``--chat``; none for a chat)."""

    def with_hint(self, hint: str) -> "TemplateError":
        return TemplateError(f"{self}; {hint}")


class HubError(DlmError):
    """Download or cache failures: missing repo or quant, no network, gated repo, disk full."""


class GenerationError(DlmError):
    """The forward pass failed or the prompt does not fit the context."""


class Aborted(GenerationError):
    """The run was stopped on request (``Runtime.abort``: a server shutting down, say)."""
