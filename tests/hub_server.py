"""A minimal Hugging Face Hub on 127.0.0.1 for the tests, speaking the HTTP protocol that
huggingface_hub's own client code uses (read from its source: `file_download.py`, `hf_api.py`,
`_commit_api.py`).

Covered: `HEAD`/`GET /{repo}/resolve/{revision}/{path}` (X-Repo-Commit, ETag, Content-Length;
X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound), `POST /api/repos/create`,
`POST /api/validate-yaml`, `POST /api/models/{repo}/preupload/{revision}` (every file "regular"),
`POST /api/models/{repo}/commit/{revision}` (NDJSON, base64 "file" operations, deletions),
`GET /api/models/{repo}[/revision/{revision}]`, `GET /api/models/{repo}/tree/{revision}` (one
page, files only); the same under `/api/spaces/` (model and Space repos share one namespace). Repos are in memory: commits (40-hex ids) with
full file snapshots, branches and tags. Not covered: LFS and Xet uploads (`lfsFile` operations,
the LFS batch API, Xet tokens), authentication and private-repo access checks, pull requests,
`paths-info`, datasets, Space runtimes and settings, range requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> files
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit id
    private: bool = False

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubServer:
    """`with HubServer() as hub:` serves on `hub.endpoint` until the block ends (or `stop()`)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ repository operations
    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        deleted: tuple[str, ...] = (),
        message: str = "",
    ) -> str:
        """Add a commit of `files` on top of `branch` (the repo is created if needed)."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.refs.get(branch)
            snapshot = dict(repo.commits[parent]) if parent else {}
            for path in deleted:
                snapshot.pop(path, None)
            snapshot.update(files)
            seed = f"{repo_id}|{parent}|{message}|{len(repo.commits)}".encode()
            digest = hashlib.sha1(seed)
            for path in sorted(snapshot):
                digest.update(path.encode() + hashlib.sha1(snapshot[path]).digest())
            oid = digest.hexdigest()
            repo.commits[oid] = snapshot
            repo.refs[branch] = oid
            return oid

    def tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        with self._lock:
            repo = self.repos[repo_id]
            repo.refs[tag] = repo.resolve(revision)
            return repo.refs[tag]

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


RESOLVE = re.compile(r"^/(?:(?:models|datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
KINDS = {"models": "model", "spaces": "space"}  # URL part -> repo type
API_REPO = re.compile(r"^/api/(?:models|spaces)/([^/]+/[^/]+?)(?:/revision/([^/]+))?$")
API_ACTION = re.compile(r"^/api/(?:models|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$")
API_TREE = re.compile(r"^/api/(?:models|spaces)/([^/]+/[^/]+)/tree/([^/]+)$")


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    # ------------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _path(self) -> str:
        hub = self.server_hub
        path = urlsplit(self.path).path
        with hub._lock:
            hub.requests.append((self.command, path))
        return path

    # ------------------------------------------------------------------ downloads
    def do_HEAD(self) -> None:
        self._resolve(self._path())

    def do_GET(self) -> None:
        path = self._path()
        if RESOLVE.match(path):
            return self._resolve(path)
        match = API_REPO.match(path)
        if match:
            return self._repo_info(unquote(match[1]), unquote(match[2] or "main"))
        match = API_TREE.match(path)
        if match:
            return self._tree(unquote(match[1]), unquote(match[2]))
        self._error(404, "NotFound", f"no route for GET {path}")

    def _tree(self, repo_id: str, revision: str) -> None:
        """`tree/{revision}?recursive=true`: every file of the commit, one page."""
        found = self._find(repo_id, revision)
        if found is None:
            return None
        repo, commit = found
        files = repo.commits[commit]
        self._json(200, [{"type": "file", "path": name, "size": len(files[name]),
                          "oid": _git_oid(files[name])} for name in sorted(files)])  # fmt: skip

    def _find(self, repo_id: str, revision: str):
        """(repo, commit) of `revision`, or None after answering the Hub's 404 for it."""
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return repo, commit

    def _resolve(self, path: str) -> None:
        match = RESOLVE.match(path)
        if match is None:
            return self._error(404, "NotFound", f"no route for {self.command} {path}")
        repo_id, revision, filename = match[1], unquote(match[2]), unquote(match[3])
        found = self._find(repo_id, revision)
        if found is None:
            return None
        repo, commit = found
        content = repo.commits[commit].get(filename)
        if content is None:
            return self._error(404, "EntryNotFound", "Entry not found", commit)
        etag = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # git blob id
        self._send(200, content, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'})

    def _repo_info(self, repo_id: str, revision: str) -> None:
        found = self._find(repo_id, revision)
        if found is None:
            return None
        repo, commit = found
        siblings = [{"rfilename": name} for name in sorted(repo.commits[commit])]
        self._json(200, {"id": repo_id, "sha": commit, "private": repo.private,
                         "siblings": siblings})  # fmt: skip

    # ------------------------------------------------------------------ uploads
    def do_POST(self) -> None:
        path = self._path()
        hub = self.server_hub
        if path == "/api/repos/create":
            payload = json.loads(self._body())
            if payload.get("type", "model") not in KINDS.values():
                return self._error(400, "BadRequest", "only model and Space repos are served")
            repo_id = f"{payload['organization']}/{payload['name']}"
            with hub._lock:
                if repo_id in hub.repos:  # the Hub answers 409 with the repo's url
                    message = "You already created this model repo"
                    headers = {"X-Error-Message": message}
                    url = f"{hub.endpoint}/{repo_id}"
                    return self._json(409, {"error": message, "url": url}, headers)
                hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
            return self._json(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        match = API_ACTION.match(path)
        if match is None:
            return self._error(404, "NotFound", f"no route for POST {path}")
        repo_id, action, revision = match[1], match[2], unquote(match[3])
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if action == "preupload":
            files = json.loads(self._body())["files"]
            head = repo.commits.get(repo.refs.get(revision, ""), {})
            modes = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": None if f["path"] not in head else _git_oid(head[f["path"]]),
                }
                for f in files
            ]
            return self._json(200, {"files": modes})
        files, deleted, message = {}, [], ""
        for line in self._body().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:  # lfsFile, copies: not implemented (see the module docstring)
                return self._error(501, "NotImplemented", f"{key} operations are not served")
        oid = hub.commit(repo_id, files, branch=revision, deleted=tuple(deleted), message=message)
        self._json(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                         "success": True})  # fmt: skip


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
