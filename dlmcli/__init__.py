"""dlm: run diffusion language models from GGUF files.

Public API: ``load``, ``generate``, ``infill``, ``Model``, ``Generation``, ``Result``,
``InfillGeneration``, ``InfillResult``, ``FilledSpan``, ``Conversation``, ``Step``,
``GenerationParams`` and the errors in ``dlmcli.errors``. Imported lazily so that ``dlm --help``
and the engine stay light.
"""

from __future__ import annotations

__version__ = "0.1.0"

# A literal list, so that tools that read __all__ without running the module (linters, IDEs) see it.
__all__ = ["Conversation", "FilledSpan", "Generation", "GenerationParams", "InfillGeneration", "InfillResult",
           "Model", "Result", "Step", "Timings", "generate", "infill", "load"]
_API = set(__all__) - {"Conversation", "Step", "GenerationParams"}


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "Conversation":
        from .conversation import Conversation

        return Conversation
    if name == "Step":
        from .engine.events import Step

        return Step
    if name == "GenerationParams":
        from .engine.params import GenerationParams

        return GenerationParams
    raise AttributeError(f"module 'dlmcli' has no attribute {name!r}")


def run() -> None:
    """The `dlm` command. The CLI (Typer, Rich: tens of ms) is imported here, so that a Ctrl-C during
    that import exits 130 with one line, like one anywhere else, not with Python's traceback."""
    import sys

    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
    main()
