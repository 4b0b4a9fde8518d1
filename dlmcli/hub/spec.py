"""Parsing MODEL as the user writes it: a .gguf path, a bundled or catalog name, owner/repo[:QUANT|:FILE.gguf]."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .catalog import CatalogEntry, catalog_names, entry_by_name, entry_by_repo

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"

# Hub repo ids: owner/name, letters, digits, '-', '_', '.' (the Hub's own rule, slightly looser).
_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<sel>[^:\s]+))?$")
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<sel>[^:/\s]+))?$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed MODEL. ``kind`` is "path", "bundled" or "hub"; hub refs carry repo and quant or filename."""

    spec: str  # as the user wrote it
    kind: str
    path: Path | None = None  # for "path" and "bundled"
    repo: str | None = None
    quant: str | None = None  # explicit quant tag; None means the catalog's or the repo's default
    filename: str | None = None  # explicit file in the repo
    entry: CatalogEntry | None = None

    @property
    def wanted_quant(self) -> str | None:
        """The quant to look for: explicit, else the catalog's default, else None (repo default)."""
        if self.quant:
            return self.quant
        if self.entry is not None and self.filename is None:
            return self.entry.quant
        return None


def bundled_models() -> dict[str, Path]:
    """The .gguf files shipped inside the package, by name (file stem)."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.gguf")) if p.is_file()}


def _split_selector(sel: str | None) -> tuple[str | None, str | None]:
    if not sel:
        return None, None
    if sel.lower().endswith(".gguf"):
        return None, sel
    return sel.upper(), None


def parse_spec(spec: str) -> ModelRef:
    """Classify MODEL; raises ModelError for something that is none of the accepted forms."""
    text = spec.strip()
    if not text:
        raise ModelError("empty model name; give a .gguf path, a name from 'dlm models', or owner/repo[:QUANT]")
    path = Path(text).expanduser()
    looks_like_path = (
        text.startswith((".", "/", "~", "\\"))
        or (text.lower().endswith(".gguf") and ":" not in text)
        or "\\" in text
        or (len(text) > 1 and text[1] == ":" and text[0].isalpha())  # C:\...
    )
    known_name = entry_by_name(text) is not None or text.lower() in {n.lower() for n in bundled_models()}
    if path.is_dir() and not known_name:  # however it is written (dir, ./dir, dir/sub): one message
        inside = sorted(p.name for p in path.glob("*.gguf"))[:3]
        hint = f"; give one of its .gguf files ({', '.join(inside)})" if inside else ""
        raise ModelError(f"{spec} is a directory, not a .gguf file{hint}")
    if path.is_file():
        return ModelRef(spec, "path", path=path)
    if looks_like_path:
        raise ModelError(f"model file not found: {spec} (give a path to a .gguf file, or see 'dlm models')")

    m = _NAME.match(text)
    if m:
        name, sel = m.group("name"), m.group("sel")
        bundled = bundled_models()
        by_lower = {n.lower(): n for n in bundled}  # names ignore case, as catalog names do
        if sel is None and name.lower() in by_lower:
            return ModelRef(spec, "bundled", path=bundled[by_lower[name.lower()]])
        entry = entry_by_name(name)
        if entry is not None:
            quant, filename = _split_selector(sel)
            return ModelRef(spec, "hub", repo=entry.repo, quant=quant, filename=filename, entry=entry)
        names = [*bundled, *catalog_names()]
        close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.75)
        guess = f"did you mean {names[[n.lower() for n in names].index(close[0])]}? " if close else ""
        raise ModelError(f"unknown model {spec}; {guess}use a .gguf path, owner/repo[:QUANT], or one of: "
                         f"{', '.join(names)}")

    m = _REPO.match(text)
    if m:
        repo = m.group("repo")
        if ".." in repo or "--" in repo or repo.endswith((".", "-")):
            raise ModelError(f"{spec} is not a valid Hub repo id (owner/name)")
        quant, filename = _split_selector(m.group("sel"))
        entry = entry_by_repo(repo)
        if entry is not None:
            repo = entry.repo  # the Hub ignores case in repo ids; the cache folder must not
        return ModelRef(spec, "hub", repo=repo, quant=quant, filename=filename, entry=entry)

    raise ModelError(f"cannot read model {spec!r}: give a .gguf path, a name from 'dlm models', or owner/repo[:QUANT]")
