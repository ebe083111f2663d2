"""A loopback HTTP stand-in for the part of the Hugging Face Hub API that an upload uses.

It answers exactly the requests the real ``huggingface_hub`` client (2.x) sends for
``HfApi.create_repo`` + ``HfApi.create_branch`` + ``HfApi.upload_folder`` (read from
``hf_api.py``, ``_commit_api.py`` and ``_upload_pipeline.py``):

* ``POST /api/repos/create``                       JSON ``{"name", "organization", "visibility"?, "type"?}``
* ``POST /api/validate-yaml``                      JSON ``{"content", "repoType"}`` (README.md front matter)
* ``POST /api/{type}s/{ns}/{name}/branch/{rev}``   create a branch
* ``POST /api/{type}s/{ns}/{name}/preupload/{rev}`` JSON ``{"files": [{"path", "sample", "size"}]}``
* ``POST /api/{type}s/{ns}/{name}/commit/{rev}``    NDJSON: a ``header`` line, then one line per file

Every file is declared ``"regular"`` in the preupload answer, so the client sends the bytes
base64-encoded inside the commit and never needs LFS or Xet storage. Anything else is answered
with 404 and recorded, so a test can assert that nothing unexpected was asked.

It binds 127.0.0.1 on a free port, serves from a daemon thread, and stops on ``__exit__``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_NAMESPACE = "stand-in-user"
_REPO_ACTION = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit|branch)/(?P<rev>[^/]+)$"
)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordedCommit:
    repo_id: str
    revision: str
    summary: str
    description: str
    files: dict[str, bytes]
    authorization: str | None


@dataclass
class _Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})


class HubStandIn:
    """Context manager running the stand-in; ``url`` is the value for ``HF_ENDPOINT``.

    ``error_echoes_authorization=True`` makes the commit endpoint fail with a 500 whose message
    repeats the request's ``Authorization`` header: a misbehaving proxy, used to check that the
    caller never lets a token leak through an error message.
    """

    def __init__(self, *, error_echoes_authorization: bool = False, request_timeout_s: float = 10.0):
        self.error_echoes_authorization = error_echoes_authorization
        self.request_timeout_s = request_timeout_s
        self.requests: list[RecordedRequest] = []
        self.commits: list[RecordedCommit] = []
        self.validated_readmes: list[str] = []
        self.repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Hub stand-in is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubStandIn":
        handler = type("_BoundHandler", (_Handler,), {"hub": self, "timeout": self.request_timeout_s})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- endpoints ---------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> tuple[int, dict, dict[str, str]]:
        """Answer one request: (status, JSON body, extra headers)."""
        with self._lock:
            self.requests.append(request)
        if request.method != "POST":
            return _error(404, f"stand-in: no {request.method} {request.path}")
        if request.path == "/api/repos/create":
            return self._create_repo(json.loads(request.body))
        if request.path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(request.body))
        match = _REPO_ACTION.match(request.path)
        if match is None:
            return _error(404, f"stand-in: no POST {request.path}")
        repo_id, revision = match["repo"], unquote(match["rev"])
        with self._lock:
            repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, f"Repository {repo_id} not found", code="RepoNotFound")
        if match["action"] == "branch":
            return self._create_branch(repo, revision)
        if revision not in repo.branches:
            return _error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        if match["action"] == "preupload":
            return self._preupload(json.loads(request.body))
        return self._commit(repo_id, repo, revision, request)

    def _create_repo(self, payload: dict) -> tuple[int, dict, dict[str, str]]:
        namespace = payload.get("organization") or DEFAULT_NAMESPACE
        repo_id = f"{namespace}/{payload['name']}"
        prefix = "" if payload.get("type") in (None, "model") else f"{payload['type']}s/"
        with self._lock:
            if repo_id in self.repos:
                return _error(409, "You already created this model repo", extra={"url": f"{self.url}/{prefix}{repo_id}"})
            self.repos[repo_id] = _Repo(private=payload.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id}, {}

    def _validate_yaml(self, payload: dict) -> tuple[int, dict, dict[str, str]]:
        content = payload["content"]
        with self._lock:
            self.validated_readmes.append(content)
        # Like the Hub: the front matter must be a YAML mapping between two '---' lines.
        parts = content.split("---", 2)
        if not content.startswith("---") or len(parts) < 3:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, {}
        try:
            metadata = yaml.safe_load(parts[1])
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}, {}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _create_branch(self, repo: _Repo, branch: str) -> tuple[int, dict, dict[str, str]]:
        with self._lock:
            if branch in repo.branches:
                return _error(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = dict(repo.branches["main"])
        return 200, {}, {}

    def _preupload(self, payload: dict) -> tuple[int, dict, dict[str, str]]:
        files = [
            {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for item in payload["files"]
        ]
        return 200, {"files": files, "commitOid": "0" * 40}, {}

    def _commit(self, repo_id: str, repo: _Repo, revision: str, request: RecordedRequest):
        authorization = request.headers.get("authorization")
        if self.error_echoes_authorization:
            return _error(500, f"stand-in failure while handling Authorization={authorization}")
        header: dict = {}
        files: dict[str, bytes] = {}
        for line_number, line in enumerate(request.body.splitlines(), start=1):
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                if value.get("encoding") != "base64":
                    return _error(400, f"commit line {line_number}: unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            else:
                # Every file was declared "regular": an LFS pointer or a deletion here is a client surprise.
                return _error(400, f"commit line {line_number}: the stand-in accepts only regular files, got {item['key']!r}")
        oid = hashlib.sha1(request.body).hexdigest()
        with self._lock:
            repo.branches[revision].update(files)
            self.commits.append(
                RecordedCommit(repo_id, revision, header.get("summary", ""), header.get("description", ""), files, authorization)
            )
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}, {}


def _error(status: int, message: str, *, code: str | None = None, extra: dict | None = None):
    headers = {"X-Error-Code": code} if code else {}
    return status, {"error": message, **(extra or {})}, headers


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn  # bound by HubStandIn.__enter__
    protocol_version = "HTTP/1.1"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=self._read_body(),
        )
        try:
            status, body, headers = self.hub.handle(request)
        except Exception as error:  # a malformed request must come back as an answer, not hang the client
            status, body, headers = _error(400, f"stand-in could not parse the request: {error!r}")
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature fixed by the base class
        pass  # requests are recorded in hub.requests; keep the test output clean
