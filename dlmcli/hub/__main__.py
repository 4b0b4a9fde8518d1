"""`python -m dlmcli.hub`: the model commands on their own, with the same error boundary as dlm.

Used by the tests (a pull they can SIGKILL) and handy before the main CLI wires these commands in.
"""

from __future__ import annotations

import sys

import typer

from ..errors import DlmError
from .commands import register


def build_app() -> typer.Typer:
    app = typer.Typer(name="dlm", help="dlm model commands.", no_args_is_help=True, add_completion=False)
    register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    try:
        code = build_app()(args=argv, prog_name="dlm", standalone_mode=False)
    except DlmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # Click usage errors (bad flags) know how to show themselves
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
