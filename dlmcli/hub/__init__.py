"""Model references: paths, bundled names, catalog names and Hub repos (placeholder: paths and bundled)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"


def resolve_model(spec: str, *, allow_pull: bool = False) -> Path:
    """Return the local .gguf path for MODEL as the user wrote it."""
    bundled = BUNDLED_DIR / f"{spec}.gguf"
    if "/" not in spec and not spec.endswith(".gguf") and bundled.is_file():
        return bundled
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(f"model file not found: {spec} (give a path to a .gguf file)")
    if path.is_dir():
        raise ModelError(f"{spec} is a directory, not a .gguf file")
    return path


def default_model() -> tuple[str, bool]:
    """The model to use when none is given, and whether it is the bundled fallback."""
    import os

    env = os.environ.get("DLM_MODEL")
    if env:
        return env, False
    return "tiny-llada", True
