"""A small stand-in for the Hugging Face Hub's HTTP API, for the real huggingface_hub client to talk to.

It serves what a pull touches: model info with file metadata (/api/models/<repo>[/revision/<rev>]), the tree
listing, HEAD/GET on /<repo>/resolve/<rev>/<path> (LFS files answer 302 to a separate "CDN" host, as the Hub
does, with X-Repo-Commit, X-Linked-Etag and X-Linked-Size), and the CDN itself with HTTP Range. Gated, private
and missing repos answer with the Hub's X-Error-Code headers. It counts every request and every body byte it
sends, so tests can assert what a resumed download did not fetch again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_REQUESTS = 400  # a runaway retry loop fails the test instead of hanging it


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    private: bool = False
    commit: str = ""

    def __post_init__(self):
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                h.update(path.encode() + hashlib.sha256(self.files[path]).digest())
            self.commit = h.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(".gguf") or len(self.files[path]) > 10_000

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        out = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
        if self.is_lfs(path):
            out["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    host: str
    served: int = 0  # body bytes sent in answer (CDN only)
    file: str | None = None  # the repo path a CDN request is for


@dataclass
class Stats:
    requests: list[Request] = field(default_factory=list)

    @property
    def served(self) -> dict[str, int]:
        """CDN body bytes sent for the requests in this Stats, by file path. Counted per request, so a
        handler still writing for a killed client after ``reset_stats`` does not leak into the new counts."""
        out: dict[str, int] = {}
        for r in self.requests:
            if r.file is not None:
                out[r.file] = out.get(r.file, 0) + r.served
        return out

    def served_total(self) -> int:
        return sum(self.served.values())

    def ranges(self, path: str) -> list[str | None]:
        return [
            r.range
            for r in self.requests
            if r.path.startswith("/cdn/") and r.path.endswith("/" + path.rsplit("/", 1)[-1]) and r.method == "GET"
        ]

    def count(self, prefix: str, method: str | None = None) -> int:
        return sum(1 for r in self.requests if r.path.startswith(prefix) and (method is None or r.method == method))


class FakeHub:
    """Start with ``start()``; ``url`` is the HF_ENDPOINT. Knobs: ``rate`` (bytes/s on the CDN, 0 = unlimited),
    ``corrupt`` (paths served with a flipped byte), ``drop_after`` ({path: n} closes the connection once after n
    bytes), ``ignore_range``, ``tokens`` ({repo_id: {token}} that may read a gated or private repo)."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.tokens: dict[str, set[str]] = {}
        self.stats = Stats()
        self.rate = 0
        self.corrupt: set[str] = set()
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        self.expire_once: set[str] = set()  # paths whose first CDN GET answers 403, like an expired signed URL
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- setup -----------------------------------------------------------------------------------------

    def add(self, repo_id: str, files: dict[str, bytes], **kw) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files), **kw)
        self.repos[repo_id] = repo
        return repo

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        # Another host name for the same server: the client must not send the token there.
        return f"http://localhost:{self.port}"

    def reset_stats(self) -> Stats:
        with self._lock:
            old, self.stats = self.stats, Stats()
        return old

    def _record(self, req: Request) -> int:
        with self._lock:
            self.stats.requests.append(req)
            return len(self.stats.requests)

    def _served(self, req: Request, n: int) -> None:
        with self._lock:
            req.served += n

    def _allowed(self, repo: FakeRepo, auth: str | None) -> bool:
        token = auth.split(" ", 1)[1] if auth and " " in auth else None
        return token is not None and token in self.tokens.get(repo.repo_id, set())


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds of silence before the server drops a connection

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # -- plumbing ---------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        self._send(
            status,
            json.dumps({"error": message}).encode(),
            {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
            head=head,
        )

    def _begin(self) -> tuple[str, dict] | None:
        parsed = urllib.parse.urlsplit(self.path)
        self.req = Request(
            self.command,
            urllib.parse.unquote(parsed.path),
            self.headers.get("Range"),
            self.headers.get("Authorization"),
            self.headers.get("Host", ""),
        )
        n = self.fake._record(self.req)
        if n > MAX_REQUESTS:
            self._send(500, b"too many requests in one test")
            return None
        return urllib.parse.unquote(parsed.path), urllib.parse.parse_qs(parsed.query)

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    # -- routes -----------------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        begun = self._begin()
        if begun is None:
            return
        path, _query = begun
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2] + "/" + parts[3], parts[4:])
            elif parts[0] == "cdn" and len(parts) >= 3:
                self._cdn(parts[1], "/".join(parts[2:]), head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, "NotFound", "no such route", head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed on purpose)

    def _repo(self, repo_id: str, head: bool = False) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        auth = self.headers.get("Authorization")
        if repo is None or (repo.private and not self.fake._allowed(repo, auth)):
            # The Hub answers 401 for missing and for private repos alike, so as not to reveal which.
            self._error(401, "RepoNotFound", "Repository not found", head)
            return None
        return repo

    def _api(self, repo_id: str, rest: list[str]) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        rev = "main"
        if rest[:1] == ["revision"] and len(rest) >= 2:
            rev = rest[1]
        elif rest[:1] == ["tree"] and len(rest) >= 2:
            rev = rest[1]
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if rest[:1] == ["tree"]:
            listing = []
            for p in sorted(repo.files):
                s = repo.sibling(p)
                entry = {"type": "file", "oid": s["blobId"], "size": s["size"], "path": p}
                if "lfs" in s:
                    entry["lfs"] = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
                listing.append(entry)
            self._json(200, listing)
            return
        self._json(
            200,
            {
                "_id": repo.commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": repo.commit,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["gguf"],
                "library_name": "gguf",
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": [repo.sibling(p) for p in sorted(repo.files)],
            },
        )

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        auth = self.headers.get("Authorization")
        if repo.gated and not self.fake._allowed(repo, auth):
            if auth:
                self._error(
                    403, "GatedRepo", "Access to this repo is restricted and you are not in the authorized list.", head
                )
            else:
                self._error(401, "GatedRepo", "Access to this repo is restricted. You must be authenticated.", head)
            return
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            return
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist", head)
            return
        data = repo.files[path]
        sib = repo.sibling(path)
        common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if "lfs" in sib:
            sha = sib["lfs"]["sha256"]
            location = f"{self.fake.cdn}/cdn/{sha}/{urllib.parse.quote(path)}?expires=never"
            self._send(
                302,
                b"",
                {
                    **common,
                    "Location": location,
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": len(data),
                    "ETag": f'"{sib["blobId"]}"',
                },
                head=head,
            )
            return
        self._send(200, data, {**common, "ETag": f'"{sib["blobId"]}"'}, head=head)

    def _cdn(self, sha: str, path: str, head: bool) -> None:
        data = None
        for repo in self.fake.repos.values():
            if path in repo.files and hashlib.sha256(repo.files[path]).hexdigest() == sha:
                data = repo.files[path]
        if data is None:
            self._send(404, b"no such object", head=head)
            return
        self.req.file = path
        if path in self.fake.expire_once and not head:
            self.fake.expire_once.discard(path)
            self._send(403, b"Request has expired")
            return
        if path in self.fake.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.fake.ignore_range:
            try:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
            except (IndexError, ValueError):
                self._send(400, b"bad range", head=head)
                return
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        drop = self.fake.drop_after.pop(path, None)
        step = 16 * 1024
        sent = 0
        while sent < len(body):
            if drop is not None and sent >= drop:
                self.close_connection = True
                return  # the handler ends; the socket closes with the body short
            piece = body[sent : sent + step]
            if drop is not None:
                piece = piece[: max(0, drop - sent)] or piece
            self.wfile.write(piece)
            self.wfile.flush()
            sent += len(piece)
            self.fake._served(self.req, len(piece))
            if self.fake.rate:
                time.sleep(len(piece) / self.fake.rate)
