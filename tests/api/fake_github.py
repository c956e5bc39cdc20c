"""A local HTTP server that behaves like the GitHub REST endpoints pgolf-audit calls.

Runs on 127.0.0.1 in a thread. State is plain Python (PRs, files at a SHA, statuses, comments),
so tests can set it up and inspect what the client did. `fail_next` queues canned error
responses (5xx, secondary rate limit) to exercise retries.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

TOKEN = "test-token-not-secret"
BOT = "pgolf-audit-bot"


@dataclass
class FakePR:
    number: int
    head_sha: str
    files: list[dict]                  # [{"filename", "status"}]


@dataclass
class FakeGitHub:
    repo: str = "openai/parameter-golf"
    prs: dict[int, FakePR] = field(default_factory=dict)
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)   # sha -> path -> content
    symlinks: dict[str, set[str]] = field(default_factory=dict)        # sha -> paths listed as symlinks
    statuses: list[dict] = field(default_factory=list)                 # with "sha"
    comments: list[dict] = field(default_factory=list)                 # {"id", "pr", "body", "user"}
    requests: list[tuple[str, str]] = field(default_factory=list)      # (method, path)
    fail_next: list[tuple[int, dict, dict]] = field(default_factory=list)  # (status, headers, body)
    login: str | None = BOT            # None: GET /user answers 403 like an App token
    next_comment_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_comment(self, pr: int, body: str, user: str) -> dict:
        with self.lock:
            self.next_comment_id += 1
            c = {"id": self.next_comment_id, "pr": pr, "body": body, "user": {"login": user}}
            self.comments.append(c)
            return c


def _handler(state: FakeGitHub):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code: int, body, headers: dict | None = None, raw: bool = False):
            data = body if raw else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def _route(self, method: str):
            url = urlparse(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            state.requests.append((method, path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"message": "Bad credentials"})
            if state.fail_next:
                code, headers, body = state.fail_next.pop(0)
                return self._send(code, body, headers)
            if path == "/user":
                if state.login is None:
                    return self._send(403, {"message": "Resource not accessible by integration"})
                return self._send(200, {"login": state.login})
            prefix = f"/repos/{state.repo}/"
            if not path.startswith(prefix):
                return self._send(404, {"message": "Not Found"})
            rest = path[len(prefix):]
            parts = rest.split("/")
            page = int(query.get("page", ["1"])[0])
            per = int(query.get("per_page", ["30"])[0])

            def paged(items):
                return self._send(200, items[(page - 1) * per: page * per])

            if parts[0] == "pulls" and len(parts) >= 2:
                pr = state.prs.get(int(parts[1]))
                if pr is None:
                    return self._send(404, {"message": "Not Found"})
                if len(parts) == 2:
                    return self._send(200, {"number": pr.number, "head": {"sha": pr.head_sha}})
                if parts[2] == "files":
                    return paged(pr.files)
            if parts[0] == "contents":
                ref = query.get("ref", [""])[0]
                tree = state.trees.get(ref)
                if tree is None:
                    return self._send(404, {"message": "No commit found for the ref"})
                target = "/".join(parts[1:]).strip("/")
                if target in tree:
                    if "raw" not in (self.headers.get("Accept") or ""):
                        return self._send(415, {"message": "ask for raw"})
                    return self._send(200, tree[target], raw=True)
                children: dict[str, dict] = {}
                for p, data in tree.items():
                    if p.startswith(target + "/"):
                        sub = p[len(target) + 1:]
                        name = sub.split("/")[0]
                        full = f"{target}/{name}"
                        if "/" in sub:
                            children[name] = {"name": name, "path": full, "type": "dir", "size": 0}
                        else:
                            kind = "symlink" if full in state.symlinks.get(ref, set()) else "file"
                            children[name] = {"name": name, "path": full, "type": kind, "size": len(data)}
                if not children:
                    return self._send(404, {"message": "Not Found"})
                return self._send(200, sorted(children.values(), key=lambda c: c["name"]))
            if parts[0] == "statuses" and method == "POST":
                body = self._body()
                if body.get("state") not in ("error", "failure", "pending", "success"):
                    return self._send(422, {"message": "Validation Failed"})
                with state.lock:
                    state.statuses.append({**body, "sha": parts[1]})
                return self._send(201, {"id": len(state.statuses), **body})
            if parts[0] == "issues" and len(parts) == 3 and parts[2] == "comments":
                pr = int(parts[1])
                if method == "GET":
                    return paged([{k: v for k, v in c.items() if k != "pr"}
                                  for c in state.comments if c["pr"] == pr])
                if method == "POST":
                    c = state.add_comment(pr, self._body()["body"], state.login or "app[bot]")
                    return self._send(201, c)
            if parts[0] == "issues" and len(parts) == 3 and parts[1] == "comments" and method == "PATCH":
                cid = int(parts[2])
                for c in state.comments:
                    if c["id"] == cid:
                        if c["user"]["login"] != (state.login or "app[bot]"):
                            return self._send(403, {"message": "Must have admin rights"})
                        c["body"] = self._body()["body"]
                        return self._send(200, c)
                return self._send(404, {"message": "Not Found"})
            return self._send(404, {"message": "Not Found"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PATCH(self):
            self._route("PATCH")

    return H


class FakeGitHubServer:
    def __init__(self, state: FakeGitHub):
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def records_pr(state: FakeGitHub, number: int = 1900, sha: str = "a" * 40,
               folder: str = "records/track_10min_16mb/2026-11-20_MyRecord",
               files: dict[str, bytes] | None = None, extra_changed: list[dict] | None = None) -> FakePR:
    """A PR adding one records folder, with its files stored at `sha`."""
    files = files if files is not None else {
        "README.md": b"# My record\n",
        "submission.json": json.dumps({"name": "My record", "val_bpb": 1.0601}).encode(),
        "train_seed42.log": b"step:1/10 train_loss:6.9 train_time:10ms step_avg:10ms\n",
        "extra/notes.txt": b"nested file\n",
    }
    tree = state.trees.setdefault(sha, {"README.md": b"repo readme"})
    for rel, data in files.items():
        tree[f"{folder}/{rel}"] = data
    changed = [{"filename": f"{folder}/{rel}", "status": "added"} for rel in files]
    pr = FakePR(number=number, head_sha=sha, files=changed + (extra_changed or []))
    state.prs[number] = pr
    return pr
