"""What is on disk: finding a pulled model, listing bundled + catalog + pulled models, removing one. No network."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import HubError, ModelError
from . import cache
from .catalog import CATALOG, entry_by_repo
from .files import GGUFGroup, quant_of, select_group
from .ggufinfo import read_info
from .spec import ModelRef, bundled_models, parse_spec


def find_local(ref: ModelRef) -> cache.LocalModel | None:
    """The complete local copy of a hub ref, preferring the snapshot refs/main names; None if absent."""
    assert ref.repo is not None
    for commit, snap, files in cache.local_file_lists(ref.repo):
        try:
            group = select_group(files, ref.repo, ref.wanted_quant, ref.filename)
        except HubError:
            continue
        return cache.LocalModel(ref.repo, commit, group, snap)
    return None


def pending_for(ref: ModelRef) -> cache.Pending | None:
    """The unfinished pull of this ref, if one was interrupted."""
    assert ref.repo is not None
    for p in cache.pending_pulls(ref.repo):
        try:
            select_group([f["path"] for f in p.files], ref.repo, ref.wanted_quant, ref.filename)
        except HubError:
            continue
        return p
    return None


def display_name(repo: str, group: GGUFGroup) -> str:
    """The shortest MODEL that names this group: a catalog name when the quant is its default."""
    entry = entry_by_repo(repo)
    quant = group.quant
    if entry is not None and quant == entry.quant:
        return entry.name
    prefix = entry.name if entry is not None else repo
    if quant is None:
        return f"{prefix}:{group.first}"
    return f"{prefix}:{quant}"


@dataclass
class ModelRow:
    """One line of `dlm models`."""

    name: str
    source: str  # bundled | catalog | hub
    status: str  # bundled | downloaded | partial | available
    arch: str | None = None
    quant: str | None = None
    size: int | None = None  # bytes on disk, or the catalog's approximate download size
    approx: bool = False  # size is the catalog estimate
    repo: str | None = None
    license: str | None = None
    path: str | None = None
    description: str | None = None
    progress: float | None = None  # fraction on disk for partial pulls

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def list_models() -> list[ModelRow]:
    """Bundled models, then the catalog (marked downloaded when pulled), then other pulled GGUFs."""
    rows: list[ModelRow] = []
    for name, path in bundled_models().items():
        try:  # header only: a few ms for the small bundled files
            info = read_info(path)
            arch, quant = info.architecture, info.quant
        except Exception:
            arch, quant = None, quant_of(name)
        rows.append(
            ModelRow(name, "bundled", "bundled", size=path.stat().st_size, path=str(path), arch=arch, quant=quant)
        )

    local_by_repo = {repo: cache.local_groups(repo) for repo in cache.cached_repos()}
    shown: set[tuple[str, str]] = set()
    for entry in CATALOG:
        row = ModelRow(
            entry.name,
            "catalog",
            "available",
            arch=entry.arch,
            quant=entry.quant,
            size=int(entry.size_gb * 1e9),
            approx=True,
            repo=entry.repo,
            license=entry.license,
            description=entry.description,
        )
        ref = parse_spec(entry.name)
        local = find_local(ref) if entry.repo in local_by_repo else None
        if local is not None:
            row.status, row.size, row.approx, row.path = "downloaded", local.size, False, str(local.path)
            shown.add((local.repo, local.group.base))
        else:
            pending = pending_for(ref) if entry.repo in local_by_repo else None
            if pending is not None and pending.total:
                row.status, row.size, row.approx = "partial", pending.total, False
                row.progress = pending.bytes_on_disk() / pending.total
                shown.add((entry.repo, pending.base))
        rows.append(row)

    for repo, models in local_by_repo.items():
        known = entry_by_repo(repo)
        for m in models:
            if (repo, m.group.base) in shown:
                continue
            shown.add((repo, m.group.base))
            rows.append(
                ModelRow(
                    display_name(repo, m.group),
                    "hub",
                    "downloaded",
                    arch=known.arch if known else None,
                    quant=m.group.quant,
                    size=m.size,
                    repo=repo,
                    license=known.license if known else None,
                    path=str(m.path),
                )
            )
        for p in cache.pending_pulls(repo):
            if (repo, p.base) in shown:
                continue
            rows.append(
                ModelRow(
                    p.spec,
                    "hub",
                    "partial",
                    quant=quant_of(p.base),
                    size=p.total,
                    repo=repo,
                    progress=p.bytes_on_disk() / p.total if p.total else None,
                )
            )
    return rows


@dataclass
class Removed:
    name: str
    repo: str
    files: list[str]
    freed: int  # bytes


def remove(spec: str) -> Removed:
    """Delete a pulled model (all its shards, in every snapshot) and any unfinished download of it.

    Blobs still linked from another snapshot file stay; a repo folder left with no files is removed whole.
    """
    ref = parse_spec(spec)
    if ref.kind == "bundled":
        raise ModelError(f"{spec} is bundled with dlm and cannot be removed")
    if ref.kind == "path":
        raise ModelError(f"{spec} is a local file, not a pulled model; delete it yourself if you mean to")
    assert ref.repo is not None
    folder = cache.repo_folder(ref.repo)
    blobs = folder / "blobs"
    removed: list[str] = []
    freed = 0
    doomed_blobs: set[Path] = set()
    for _commit, snap, files in cache.local_file_lists(ref.repo):
        try:
            group = select_group(files, ref.repo, ref.wanted_quant, ref.filename)
        except HubError:
            continue
        for rel in group.files:
            link = snap / rel
            if link.is_symlink():
                doomed_blobs.add(Path(os.path.realpath(link)))
            else:
                freed += link.stat().st_size
            link.unlink()
            removed.append(f"{snap.name[:8]}/{rel}")
    pending = pending_for(ref)
    if pending is not None:
        for f in pending.files:
            part = blobs / (f["etag"] + ".incomplete")
            if part.is_file():
                freed += part.stat().st_size
                part.unlink()
                removed.append(part.name)
        pending.note.unlink(missing_ok=True)
    if not removed:
        raise ModelError(f"{spec} is not downloaded; nothing to remove (see 'dlm models')")
    still_linked = _linked_blobs(folder)
    for blob in doomed_blobs:
        if blob not in still_linked and blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    _prune(folder)
    return Removed(spec, ref.repo, removed, freed)


def _linked_blobs(folder: Path) -> set[Path]:
    out = set()
    for root, _dirs, names in os.walk(folder / "snapshots"):
        for name in names:
            p = Path(root) / name
            if p.is_symlink():
                out.add(Path(os.path.realpath(p)))
    return out


def _prune(folder: Path) -> None:
    """Drop empty snapshot dirs; drop the whole repo folder when no file of it is left."""
    snaps = folder / "snapshots"
    if snaps.is_dir():
        for root, dirs, names in os.walk(snaps, topdown=False):
            if not dirs and not names and Path(root) != snaps:
                os.rmdir(root)
            elif Path(root) != snaps and not os.listdir(root):
                os.rmdir(root)
    has_snapshot_files = snaps.is_dir() and any(snaps.iterdir())
    blobs = folder / "blobs"
    has_blobs = blobs.is_dir() and any(blobs.iterdir())
    if not has_snapshot_files and not has_blobs:
        shutil.rmtree(folder, ignore_errors=True)
        locks = cache.hub_cache_dir() / ".locks" / folder.name
        shutil.rmtree(locks, ignore_errors=True)
