"""Exceptions written for users.

The library raises these; the CLI turns each into one ``Error: ...`` line on stderr and an exit code.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM arrived: unwind like a Ctrl-C (the live view gives the terminal back), exit 143.
    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


class DlmError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message, saying what to do next."""

    exit_code = 1


class UsageError(DlmError):
    """Options that contradict each other or are out of range (exit code 2, like a bad flag)."""

    exit_code = 2


class ModelError(DlmError):
    """The model file cannot be used: missing, not GGUF, not a diffusion model, bad metadata."""


class HubError(DlmError):
    """Download or cache failures: missing repo or quant, no network, gated repo, disk full."""


class GenerationError(DlmError):
    """The forward pass failed or the prompt does not fit the context."""
