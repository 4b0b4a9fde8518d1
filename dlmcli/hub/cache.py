"""The standard Hugging Face cache, read and written in its documented layout.

    <cache>/models--<owner>--<name>/blobs/<etag>                 file contents (etag = sha256 for LFS files)
    <cache>/models--<owner>--<name>/blobs/<etag>.incomplete      a download in progress (the hub's own name)
    <cache>/models--<owner>--<name>/snapshots/<commit>/<path>    relative symlink to the blob
    <cache>/models--<owner>--<name>/refs/main                    commit the branch pointed to at the last pull

A blob only appears by an atomic rename after its size and sha256 were checked, and a snapshot link only after
its blob, so anything reachable from snapshots/ is complete. dlm adds one thing of its own, .dlm/pending/*.json,
a note per unfinished pull so that `dlm models` can show it and `dlm rm` can clean it up.
Paths are computed from the environment at each call (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME), not at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .files import GGUFGroup, group_ggufs

_TRUE = {"1", "on", "yes", "true"}


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps repos, by the same rules it applies."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def repo_folder(repo: str) -> Path:
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def repo_from_folder(name: str) -> str | None:
    if not name.startswith("models--"):
        return None
    parts = name[len("models--") :].split("--")
    return "/".join(parts) if len(parts) == 2 else None


@dataclass(frozen=True)
class LocalModel:
    """A complete model in the cache: the group's files in one snapshot."""

    repo: str
    commit: str
    group: GGUFGroup
    snapshot: Path

    @property
    def path(self) -> Path:
        """The file to load (first shard)."""
        return self.snapshot / self.group.first

    @property
    def paths(self) -> list[Path]:
        return [self.snapshot / f for f in self.group.files]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


def _snapshot_files(snapshot: Path) -> list[str]:
    """Repo-relative paths of complete files in a snapshot (a dangling link is not a file)."""
    out = []
    for root, _dirs, names in os.walk(snapshot):
        for name in names:
            full = Path(root) / name
            if full.is_file():  # follows the link; False when the blob is missing
                out.append(full.relative_to(snapshot).as_posix())
    return out


def snapshots(repo: str) -> list[tuple[str, Path]]:
    """(commit, dir) of the repo's snapshots, the one refs/main names first, then newest first."""
    folder = repo_folder(repo)
    snap_dir = folder / "snapshots"
    if not snap_dir.is_dir():
        return []
    dirs = [d for d in snap_dir.iterdir() if d.is_dir()]
    main = read_ref(repo)
    dirs.sort(key=lambda d: (d.name != main, -d.stat().st_mtime))
    return [(d.name, d) for d in dirs]


def read_ref(repo: str, revision: str = "main") -> str | None:
    try:
        return (repo_folder(repo) / "refs" / revision).read_text().strip() or None
    except OSError:
        return None


def write_ref(repo: str, commit: str, revision: str = "main") -> None:
    ref = repo_folder(repo) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ref, commit)


def local_groups(repo: str) -> list[LocalModel]:
    """Every complete GGUF model of the repo in the cache, one per group (the preferred snapshot wins)."""
    seen: set[str] = set()
    out = []
    for commit, snap in snapshots(repo):
        groups, _ = group_ggufs(_snapshot_files(snap))
        for g in groups:
            if g.base not in seen:
                seen.add(g.base)
                out.append(LocalModel(repo, commit, g, snap))
    return out


def local_file_lists(repo: str) -> list[tuple[str, Path, list[str]]]:
    """(commit, snapshot, files) per snapshot, in preference order."""
    return [(c, s, _snapshot_files(s)) for c, s in snapshots(repo)]


def cached_repos() -> list[str]:
    root = hub_cache_dir()
    if not root.is_dir():
        return []
    repos = []
    for child in sorted(root.iterdir()):
        repo = repo_from_folder(child.name)
        if repo and child.is_dir():
            repos.append(repo)
    return repos


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def link_into_snapshot(blob: Path, snapshot: Path, rel_path: str) -> Path:
    """Make snapshot/rel_path point at the blob (relative symlink, as the hub does; a copy where links fail)."""
    dest = snapshot / rel_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(blob, dest.parent), tmp)
    except OSError:  # no symlink permission (Windows without developer mode): fall back like the hub does
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
    os.replace(tmp, dest)
    return dest


# ---- notes on unfinished pulls ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """An unfinished pull: which files it wants and how many bytes of them are on disk."""

    repo: str
    spec: str
    base: str
    files: list[dict]  # {"path", "etag", "size"}
    note: Path

    @property
    def total(self) -> int:
        return sum(f["size"] for f in self.files)

    def bytes_on_disk(self) -> int:
        blobs = repo_folder(self.repo) / "blobs"
        done = 0
        for f in self.files:
            blob = blobs / f["etag"]
            part = blobs / (f["etag"] + ".incomplete")
            if blob.is_file():
                done += f["size"]
            elif part.is_file():
                done += min(part.stat().st_size, f["size"])
        return done


def _pending_dir(repo: str) -> Path:
    return repo_folder(repo) / ".dlm" / "pending"


def _pending_name(base: str) -> str:
    return hashlib.sha1(base.encode()).hexdigest()[:16] + ".json"


def write_pending(repo: str, spec: str, base: str, files: list[dict]) -> None:
    d = _pending_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / _pending_name(base), json.dumps({"spec": spec, "base": base, "files": files}))


def clear_pending(repo: str, base: str) -> None:
    note = _pending_dir(repo) / _pending_name(base)
    note.unlink(missing_ok=True)


def pending_pulls(repo: str) -> list[Pending]:
    d = _pending_dir(repo)
    if not d.is_dir():
        return []
    out = []
    for note in sorted(d.glob("*.json")):
        try:
            data = json.loads(note.read_text())
            out.append(Pending(repo, data["spec"], data["base"], list(data["files"]), note))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a note we cannot read is only a display nicety; ignore it
    return out

