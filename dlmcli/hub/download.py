"""`dlm pull`: resumable downloads into the standard Hugging Face cache.

huggingface_hub answers the questions (which commit, which files with which sizes and sha256, where the bytes
live, gated or missing); dlm moves the bytes itself. Since huggingface_hub 1.18 a download killed midway restarts
from zero, which is not acceptable for 5-30 GB GGUFs. So each file streams into the hub's own
``blobs/<etag>.incomplete`` with an HTTP Range request from the bytes already there, is checked for size and
sha256, fsynced, and renamed into ``blobs/<etag>`` before the snapshot link appears. A process killed at any
point leaves either a complete, linked file or an ``.incomplete`` that the next pull continues.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import HubError, UsageError
from . import cache
from .files import GGUFGroup, select_group
from .manage import find_local
from .spec import ModelRef

CHUNK = 1 << 20  # bytes per read from the socket (at most)
RETRIES = 3  # reconnects per file after a dropped connection, each resuming where the last stopped
RETRY_WAIT_S = 1.0  # doubled after each retry
_T = TypeVar("_T")


class HubUnreachable(HubError):
    """The Hub could not be reached at all (no network, DNS, refused, timed out)."""


class PullInterrupted(HubError):
    """Ctrl-C during a pull; what was downloaded stays for the next pull."""

    exit_code = 130


# ---- progress ---------------------------------------------------------------------------------------


class PullProgress:
    """Where pull reports what it does. The default does nothing; the CLI passes a Rich one."""

    def begin(self, name: str, total: int, done: int) -> None:
        """A pull of ``total`` bytes starts, ``done`` of them already on disk."""

    def file(self, path: str, size: int, done: int) -> None:
        """Now downloading ``path`` with ``done`` of its ``size`` bytes already on disk."""

    def advance(self, n: int) -> None:
        """``n`` more bytes are on disk (negative when a server ignored Range and the file restarts)."""

    def note(self, message: str) -> None:
        """A one-line hint for the user."""

    def end(self) -> None:
        """The pull is over, successfully or not."""


# ---- settings read from the environment at call time ----------------------------------------------


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _timeout(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file must not stop anonymous downloads
        return os.environ.get("HF_TOKEN") or None


def scrub(text: str) -> str:
    """Remove the user's token from text that came from elsewhere (server messages, exceptions)."""
    token = _token()
    for secret in {token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")}:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


# ---- errors ------------------------------------------------------------------------------------------

_NETWORK_NAMES = {
    "ConnectError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "RemoteProtocolError",
    "ProxyError",
    "SSLError",
    "ReadError",
}


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return True
    return any(cls.__name__ in _NETWORK_NAMES for cls in type(exc).__mro__)


def _hub_error(exc: Exception, repo: str, spec: str) -> HubError | None:
    """Translate a huggingface_hub exception into one line that says what to do; None if not ours to map."""
    from huggingface_hub import errors as hf_errors

    url = f"{endpoint()}/{repo}"
    gated = getattr(hf_errors, "GatedRepoError", ())
    if gated and isinstance(exc, gated):
        if _token():
            return HubError(f"{repo} is gated and your HF_TOKEN has no access; accept its terms at {url}")
        return HubError(f"{repo} is gated: accept its terms at {url}, then set HF_TOKEN (or run 'hf auth login')")
    not_found = getattr(hf_errors, "RepositoryNotFoundError", ())
    if not_found and isinstance(exc, not_found):
        hint = "check the name" if _token() else "check the name, or set HF_TOKEN if it is private"
        return HubError(f"repo {repo} not found on {endpoint()} ({hint})")
    rev = getattr(hf_errors, "RevisionNotFoundError", ())
    if rev and isinstance(exc, rev):
        return HubError(f"{repo} has no such revision")
    entry = getattr(hf_errors, "EntryNotFoundError", ()) or getattr(hf_errors, "RemoteEntryNotFoundError", ())
    if entry and isinstance(exc, entry):
        return HubError(f"a file of {repo} vanished from the Hub during the pull; run 'dlm pull {spec}' again")
    offline = getattr(hf_errors, "OfflineModeIsEnabled", ())
    if offline and isinstance(exc, offline):
        return HubError(f"HF_HUB_OFFLINE is set and {spec} is not downloaded; unset HF_HUB_OFFLINE to pull it")
    http_err = getattr(hf_errors, "HfHubHTTPError", ())
    if http_err and isinstance(exc, http_err):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(f"{endpoint()} refused access to {repo} (HTTP {status}); check HF_TOKEN")
        if status == 429:
            return HubError(
                f"{endpoint()} is rate-limiting requests (HTTP 429); wait a minute and run 'dlm pull {spec}' again"
            )
        return HubError(f"{endpoint()} answered HTTP {status} for {repo}; try again later")
    if _is_network_error(exc):
        return HubUnreachable(_network_message(exc, spec))
    return None


def _network_message(exc: BaseException, spec: str) -> str:
    reason = getattr(exc, "reason", None) or exc
    return scrub(
        f"cannot reach {endpoint()} ({type(reason).__name__}: {reason}); check the network (or HF_ENDPOINT), "
        f"then run 'dlm pull {spec}' again"
    )


def _hub_call(fn: Callable[[], _T], repo: str, spec: str) -> _T:
    try:
        return fn()
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped below, re-raised when unknown
        mapped = _hub_error(exc, repo, spec)
        if mapped is None:
            raise
        mapped.args = (scrub(str(mapped)),)
        raise mapped from None


# ---- listing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    etag: str  # sha256 for LFS files, the git blob id otherwise: the blob's name in the cache
    sha256: str | None


@dataclass(frozen=True)
class RemotePlan:
    commit: str
    files: tuple[RemoteFile, ...]
    base: str


def plan_pull(ref: ModelRef, revision: str = "main") -> RemotePlan:
    """Ask the Hub which commit and files ``ref`` means right now (one API call)."""
    from huggingface_hub import HfApi

    repo = ref.repo
    assert repo is not None
    api = HfApi(endpoint=endpoint())
    info = _hub_call(
        lambda: api.model_info(
            repo, revision=revision, files_metadata=True, timeout=_timeout("HF_HUB_ETAG_TIMEOUT", 10)
        ),
        repo,
        ref.spec,
    )
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    group = select_group(list(siblings), repo, ref.wanted_quant, ref.filename)
    files = []
    for path in group.files:
        s = siblings[path]
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if isinstance(lfs, dict):  # older clients kept it a dict
            sha = lfs.get("sha256")
        size = s.size if s.size is not None else getattr(lfs, "size", None)
        etag = sha or s.blob_id
        if size is None or not etag:
            raise HubError(f"{endpoint()} did not report the size of {path}; cannot pull it safely")
        files.append(RemoteFile(path, int(size), etag, sha))
    if not info.sha:
        raise HubError(f"{endpoint()} did not report the commit of {ref.repo}")
    return RemotePlan(info.sha, tuple(files), group.base)


# ---- pull ---------------------------------------------------------------------------------------------


@dataclass
class PullResult:
    model: cache.LocalModel
    downloaded: int = 0  # bytes fetched by this pull
    reused: int = 0  # bytes already on disk (complete blobs or a resumed .incomplete)
    checked_remote: bool = True  # False when offline or unreachable and the local copy was used
    files: list[str] = field(default_factory=list)


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def pull(ref: ModelRef, *, progress: PullProgress | None = None, revision: str = "main") -> PullResult:
    """Download ``ref`` (every shard) into the HF cache, continuing any earlier partial download."""
    progress = progress or PullProgress()
    if ref.kind != "hub":
        raise UsageError(f"{ref.spec} is a local file; there is nothing to pull")
    assert ref.repo is not None
    if cache.offline_mode():
        local = find_local(ref)
        if local is not None:
            progress.note(f"HF_HUB_OFFLINE is set: using the downloaded {ref.spec} without checking for updates")
            return PullResult(local, checked_remote=False, files=list(local.group.files))
        raise HubError(f"HF_HUB_OFFLINE is set and {ref.spec} is not downloaded; unset HF_HUB_OFFLINE to pull it")

    try:
        plan = plan_pull(ref, revision)
    except HubError as exc:
        local = find_local(ref) if isinstance(exc, HubUnreachable) else None
        if local is not None:
            progress.note(f"{exc}; using the downloaded copy of {ref.spec}")
            return PullResult(local, checked_remote=False, files=list(local.group.files))
        raise

    folder = cache.repo_folder(ref.repo)
    blobs = folder / "blobs"
    snapshot = folder / "snapshots" / plan.commit
    blobs.mkdir(parents=True, exist_ok=True)

    todo = [f for f in plan.files if not _blob_ok(blobs / f.etag, f.size)]
    total = sum(f.size for f in plan.files)
    on_disk = total - sum(f.size - _partial_size(blobs, f) for f in todo)
    downloaded = 0
    if todo:
        try:
            need = total - on_disk
            free = _free_bytes(blobs)
            if need > free:
                raise HubError(
                    f"not enough disk space for {ref.spec}: needs {human_bytes(need)} more, {human_bytes(free)} "
                    f"free in {blobs}; free some space (dlm rm ...) or point HF_HOME at a bigger disk"
                )
            cache.write_pending(
                ref.repo, ref.spec, plan.base, [{"path": f.path, "etag": f.etag, "size": f.size} for f in plan.files]
            )
            if on_disk:
                progress.note(f"resuming {ref.spec}: {human_bytes(on_disk)} of {human_bytes(total)} already on disk")
            progress.begin(ref.spec, total, on_disk)
            try:
                for f in todo:
                    downloaded += _fetch_blob(ref, plan.commit, f, blobs, progress)
            except KeyboardInterrupt:
                kept = sum(f.size if _blob_ok(blobs / f.etag, f.size) else _partial_size(blobs, f) for f in plan.files)
                raise PullInterrupted(
                    f"pull interrupted; {human_bytes(kept)} of {human_bytes(total)} kept, "
                    f"run 'dlm pull {ref.spec}' to resume"
                ) from None
            finally:
                progress.end()
        except BaseException:
            _forget_if_nothing_kept(ref.repo, plan, blobs)
            raise

    for f in plan.files:
        cache.link_into_snapshot(blobs / f.etag, snapshot, f.path)
    if revision != plan.commit and re.fullmatch(r"[\w.-]+(/[\w.-]+)*", revision) and ".." not in revision:
        cache.write_ref(ref.repo, plan.commit, revision)  # a branch or tag: its commit, as huggingface_hub keeps it
    cache.clear_pending(ref.repo, plan.base)
    group = GGUFGroup(tuple(f.path for f in plan.files), plan.base)
    model = cache.LocalModel(ref.repo, plan.commit, group, snapshot)
    return PullResult(model, downloaded=downloaded, reused=on_disk, files=list(group.files))


def _forget_if_nothing_kept(repo: str, plan: RemotePlan, blobs: Path) -> None:
    """After a failed pull with not one byte on disk (gated, refused, no space), leave no trace: no pending
    note that `dlm models` would show as a 0% download, no empty folders."""
    if any(_blob_ok(blobs / f.etag, f.size) or _partial_size(blobs, f) for f in plan.files):
        return
    cache.clear_pending(repo, plan.base)
    folder = cache.repo_folder(repo)
    for d in (folder / ".dlm" / "pending", folder / ".dlm", blobs, folder):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


def _blob_ok(blob: Path, size: int) -> bool:
    try:
        return blob.is_file() and blob.stat().st_size == size
    except OSError:
        return False


def _partial_size(blobs: Path, f: RemoteFile) -> int:
    part = blobs / (f.etag + ".incomplete")
    try:
        n = part.stat().st_size
    except OSError:
        return 0
    return n if n <= f.size else 0


# ---- one file -------------------------------------------------------------------------------------------


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the token to another host (the CDN does not need it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _request_headers(url: str) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers(library_name="dlm"))
    if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(endpoint()).netloc:
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    headers["Accept-Encoding"] = "identity"
    return headers


def _file_location(ref: ModelRef, commit: str, f: RemoteFile) -> str:
    """HEAD on the resolve URL (through huggingface_hub): where the bytes are, and whether we may read them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    assert ref.repo is not None
    url = hf_hub_url(ref.repo, f.path, revision=commit, endpoint=endpoint())
    meta = _hub_call(lambda: get_hf_file_metadata(url, timeout=_timeout("HF_HUB_ETAG_TIMEOUT", 10)), ref.repo, ref.spec)
    if meta.etag and meta.etag != f.etag:
        raise HubError(f"{f.path} changed on the Hub during the pull; run 'dlm pull {ref.spec}' again")
    if meta.size is not None and meta.size != f.size:
        raise HubError(f"the Hub reports two sizes for {f.path}; run 'dlm pull {ref.spec}' again")
    return meta.location or url


def _fetch_blob(ref: ModelRef, commit: str, f: RemoteFile, blobs: Path, progress: PullProgress) -> int:
    """Bring blobs/<etag> to completion, resuming blobs/<etag>.incomplete. Returns bytes downloaded."""
    from filelock import FileLock, Timeout

    assert ref.repo is not None
    lock_path = cache.hub_cache_dir() / ".locks" / cache.repo_folder(ref.repo).name / f"{f.etag}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise HubError(
            f"another process is downloading {f.path}; wait for it to finish, then run 'dlm pull {ref.spec}'"
        ) from None
    try:
        if _blob_ok(blobs / f.etag, f.size):  # the other process finished it meanwhile
            return 0
        return _stream(ref, commit, f, blobs, progress)
    finally:
        lock.release()


def _stream(ref: ModelRef, commit: str, f: RemoteFile, blobs: Path, progress: PullProgress) -> int:
    part = blobs / (f.etag + ".incomplete")
    blob = blobs / f.etag
    have = _partial_size(blobs, f)
    if part.exists() and have == 0:
        part.unlink()  # longer than the file: not ours to trust
    progress.file(f.path, f.size, have)
    hasher = hashlib.sha256()
    if have:
        if have > 1 << 30:
            progress.note(f"checking the {human_bytes(have)} of {f.path} already on disk")
        with open(part, "rb") as fh:  # the hash must cover every byte, including those from earlier runs
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
    location = _file_location(ref, commit, f)
    timeout = _timeout("HF_HUB_DOWNLOAD_TIMEOUT", 10)
    opener = urllib.request.build_opener(_NoAuthAcrossHosts())
    downloaded = 0
    failures = 0
    refreshed = False
    while have < f.size:
        headers = _request_headers(location)
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with opener.open(urllib.request.Request(location, headers=headers), timeout=timeout) as resp:
                status = resp.status
                if status == 206:
                    start = _range_start(resp.headers.get("Content-Range"))
                    if start != have:
                        raise HubError(
                            f"the server sent {f.path} from byte {start}, not {have}; run 'dlm pull {ref.spec}' again"
                        )
                elif status == 200:
                    if have:  # Range ignored: the body is the whole file, start over
                        progress.note(f"the server ignored the resume request for {f.path}; downloading it again")
                        progress.advance(-have)
                        have, hasher = 0, hashlib.sha256()
                else:
                    raise HubError(f"unexpected HTTP {status} downloading {f.path}")
                with open(part, "r+b" if have else "wb", buffering=0) as out:
                    out.seek(have)
                    out.truncate()
                    while have < f.size:
                        chunk = resp.read1(min(CHUNK, f.size - have))  # never past the expected size
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            n = out.write(view) or 0
                            hasher.update(view[:n])
                            have += n
                            downloaded += n
                            progress.advance(n)
                            view = view[n:]
                    if have >= f.size:
                        os.fsync(out.fileno())
            if have < f.size:
                raise ConnectionError(f"connection closed after {have} of {f.size} bytes")
            failures = 0
        except HubError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 410) and not refreshed:  # expired signed URL: ask for a fresh one
                refreshed = True
                location = _file_location(ref, commit, f)
                continue
            if exc.code == 416 and have:  # the server thinks our partial file is wrong: restart it
                part.unlink(missing_ok=True)
                progress.advance(-have)
                have, hasher = 0, hashlib.sha256()
                failures += 1
                if failures <= RETRIES:
                    continue
            raise HubError(
                scrub(
                    f"HTTP {exc.code} downloading {f.path} from {_host(location)}; "
                    f"run 'dlm pull {ref.spec}' again to resume"
                )
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise HubError(
                    f"disk full while writing {f.path} ({human_bytes(have)} of {human_bytes(f.size)} kept in {blobs}); "
                    f"free some space and run 'dlm pull {ref.spec}' to resume"
                ) from None
            if exc.filename is not None and not isinstance(exc, (socket.timeout, ConnectionError)):
                raise HubError(f"cannot write {exc.filename}: {exc.strerror}") from None
            failures += 1
            if failures > RETRIES:
                raise HubError(_interrupted(exc, f, have, ref)) from None
            progress.note(f"connection lost ({type(exc).__name__}); retrying from byte {have}")
            time.sleep(RETRY_WAIT_S * 2 ** (failures - 1))
        except http.client.HTTPException as exc:
            failures += 1
            if failures > RETRIES:
                raise HubError(_interrupted(exc, f, have, ref)) from None
            time.sleep(RETRY_WAIT_S * 2 ** (failures - 1))

    if have != f.size:
        raise HubError(f"{f.path}: got {have} bytes, expected {f.size}; run 'dlm pull {ref.spec}' again")
    if f.sha256 and hasher.hexdigest() != f.sha256:
        part.unlink(missing_ok=True)
        raise HubError(
            f"{f.path} failed its sha256 check and was deleted; run 'dlm pull {ref.spec}' to download it again"
        )
    os.replace(part, blob)
    _fsync_dir(blobs)
    return downloaded


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(content_range.split()[1].split("-")[0]) if content_range else None
    except (IndexError, ValueError):
        return None


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _interrupted(exc: BaseException, f: RemoteFile, have: int, ref: ModelRef) -> str:
    return scrub(
        f"download of {f.path} interrupted at {human_bytes(have)} of {human_bytes(f.size)} "
        f"({type(exc).__name__}: {exc}); run 'dlm pull {ref.spec}' to resume"
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
