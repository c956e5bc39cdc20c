"""A small GitHub REST client (httpx) for the webhook path: read a PR's records folder, report back.

What it does, and only that:
  * list a PR's changed files and find the ONE records folder it adds or changes
    (`records/track_*/<folder>/…`); none or several is a clear `GitHubError`;
  * download that folder's files at the head SHA through the contents API, with the same limits
    as uploads (`rules.archive.DEFAULT_LIMITS`: 1,000 files, 200 MB) and the same path checks;
  * set the `pgolf-audit` commit status;
  * create-or-update ONE sticky PR comment, found again by a hidden HTML marker.

Transient failures are retried (transport errors, 5xx, 429 and GitHub's secondary rate limit,
honouring Retry-After / X-RateLimit-Reset up to a cap); everything else becomes a `GitHubError`
with a stable code and one human sentence. The token is only ever sent to the configured API
URL and never written to logs or errors.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import httpx

from rules.archive import DEFAULT_LIMITS, Limits, safe_member_path
from rules.errors import TOO_LARGE, TOO_MANY_MEMBERS, InputError

STATUS_CONTEXT = "pgolf-audit"
STICKY_MARKER = "<!-- pgolf-audit:sticky-comment -->"
MAX_COMMENT_CHARS = 65_000          # GitHub refuses bodies over 65,536 characters
MAX_RETRY_WAIT_S = 60.0
CONTENTS_MAX_FILE_BYTES = 100 * 1000 * 1000   # the contents API serves raw files up to 100 MB
RECORDS_RE = re.compile(r"^records/(track_[^/]+)/([^/]+)/.+")

# stable error codes
GITHUB_AUTH = "github_auth"                  # 401 / 403 without rate limiting: token missing or lacking scope
GITHUB_NOT_FOUND = "github_not_found"        # repo, PR, ref or path does not exist (or is private)
GITHUB_RATE_LIMITED = "github_rate_limited"  # still limited after the retries
GITHUB_UNAVAILABLE = "github_unavailable"    # 5xx / network errors after the retries
GITHUB_REJECTED = "github_rejected"          # 4xx we did not expect (422 validation, …)
NO_RECORDS_FOLDER = "no_records_folder"
SEVERAL_RECORDS_FOLDERS = "several_records_folders"
BAD_REPO = "bad_repo"


class GitHubError(Exception):
    """A GitHub call that did not work. `code` is stable; `message` is one sentence."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class RecordsFolder:
    path: str            # records/track_10min_16mb/2026-04-29_Name
    track: str           # track_10min_16mb
    name: str            # 2026-04-29_Name


@dataclass
class FetchedFolder:
    """What `download_folder` / `fetch_pr_folder` wrote under `dest`."""
    repo: str
    pr: int | None
    head_sha: str
    folder: RecordsFolder
    dest: Path
    files: list[str] = field(default_factory=list)        # relative to dest, sorted
    total_bytes: int = 0
    skipped: list[str] = field(default_factory=list)      # symlinks / submodules, not fetched


def check_repo(repo: str) -> str:
    if not isinstance(repo, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo) \
            or ".." in repo:
        raise GitHubError(BAD_REPO, f"{repo!r} is not an owner/name GitHub repository.")
    return repo


def find_records_folder(files: list[dict[str, Any]]) -> RecordsFolder:
    """The one records folder a PR adds or changes, from its changed-files list.

    Removed files do not count (a PR that deletes an old folder and adds a new one audits the
    new one); a file renamed out of a folder counts for its new place only."""
    found: dict[str, RecordsFolder] = {}
    for f in files:
        if f.get("status") == "removed":
            continue
        m = RECORDS_RE.match(str(f.get("filename") or ""))
        if m:
            path = f"records/{m.group(1)}/{m.group(2)}"
            found.setdefault(path, RecordsFolder(path=path, track=m.group(1), name=m.group(2)))
    if not found:
        raise GitHubError(NO_RECORDS_FOLDER,
                          "The pull request adds or changes no records folder "
                          "(records/track_*/<folder>/…); there is nothing to audit.")
    if len(found) > 1:
        names = ", ".join(sorted(found))
        raise GitHubError(SEVERAL_RECORDS_FOLDERS,
                          f"The pull request changes {len(found)} records folders ({names}); "
                          "a submission is one folder, so split the pull request.")
    return next(iter(found.values()))


class GitHubClient:
    """Thin client over the REST API. Use as a context manager (it owns an httpx.Client)."""

    def __init__(self, api_url: str = "https://api.github.com", token: str | None = None, *,
                 timeout_s: float = 20.0, retries: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "pgolf-audit"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.retries, self.backoff_s, self.sleep = retries, backoff_s, sleep
        self._login: str | None | bool = False   # False = not looked up yet
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers,
                                 timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
                                 transport=transport, follow_redirects=True)

    @classmethod
    def from_settings(cls, settings: Any = None, **kw: Any) -> "GitHubClient":
        if settings is None:
            from store.settings import get_settings
            settings = get_settings()
        return cls(settings.github_api_url, settings.github_token, **kw)

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---------------------------------------------------------------------------- transport
    def request(self, method: str, path: str, *, params: dict | None = None,
                json: Any = None, accept: str | None = None) -> httpx.Response:
        """One API call with retries; a 2xx response or a GitHubError."""
        headers = {"Accept": accept} if accept else None
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self.http.request(method, path, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                last = f"network error ({type(exc).__name__})"
                if attempt < self.retries:
                    self.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise GitHubError(GITHUB_UNAVAILABLE,
                                  f"GitHub could not be reached for {method} {path}: {last}.") from None
            if resp.status_code < 300:
                return resp
            wait = self._retry_wait(resp, attempt)
            if wait is not None and attempt < self.retries:
                self.sleep(wait)
                continue
            raise self._error(method, path, resp)
        raise GitHubError(GITHUB_UNAVAILABLE, f"{method} {path} failed: {last}.")  # pragma: no cover

    def _retry_wait(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the response is final."""
        if resp.status_code >= 500 or resp.status_code == 429 or _rate_limited(resp):
            wait = self.backoff_s * 2 ** attempt
            after = resp.headers.get("retry-after")
            reset = resp.headers.get("x-ratelimit-reset")
            if after and after.strip().isdigit():
                wait = float(after)
            elif resp.headers.get("x-ratelimit-remaining") == "0" and reset and reset.isdigit():
                wait = max(float(reset) - time.time(), 1.0)
            # a long wait is not ours to sit out: fail now, the task's own retry comes back later
            return wait if wait <= MAX_RETRY_WAIT_S else None
        return None

    @staticmethod
    def _error(method: str, path: str, resp: httpx.Response) -> GitHubError:
        try:
            detail = str(resp.json().get("message") or "")[:200]
        except Exception:
            detail = ""
        what = f"{method} {path} returned HTTP {resp.status_code}" + (f" ({detail})" if detail else "")
        code = resp.status_code
        if code == 429 or _rate_limited(resp):
            return GitHubError(GITHUB_RATE_LIMITED, f"GitHub rate limit: {what}; try again later.", code)
        if code >= 500:
            return GitHubError(GITHUB_UNAVAILABLE, f"GitHub is failing: {what}.", code)
        if code in (401, 403):
            return GitHubError(GITHUB_AUTH, f"GitHub refused the token: {what}; check "
                               "PGOLF_AUDIT_GITHUB_TOKEN and its permissions.", code)
        if code == 404:
            return GitHubError(GITHUB_NOT_FOUND, f"Not found on GitHub: {what}.", code)
        return GitHubError(GITHUB_REJECTED, f"GitHub rejected the call: {what}.", code)

    def paginate(self, path: str, params: dict | None = None, *, limit: int = 3000) -> list[Any]:
        """Every item of a list endpoint (per_page=100, following page numbers)."""
        out: list[Any] = []
        page = 1
        while len(out) < limit:
            resp = self.request("GET", path, params={**(params or {}), "per_page": 100, "page": page})
            items = resp.json()
            if not isinstance(items, list):
                raise GitHubError(GITHUB_REJECTED, f"GET {path} did not return a list.")
            out.extend(items)
            if len(items) < 100 or 'rel="next"' not in resp.headers.get("link", 'rel="next"'):
                break
            page += 1
        return out[:limit]

    # ---------------------------------------------------------------------------- reads
    def pull_request(self, repo: str, pr: int) -> dict[str, Any]:
        return self.request("GET", f"/repos/{check_repo(repo)}/pulls/{int(pr)}").json()

    def pr_files(self, repo: str, pr: int) -> list[dict[str, Any]]:
        return self.paginate(f"/repos/{check_repo(repo)}/pulls/{int(pr)}/files")

    def list_dir(self, repo: str, path: str, ref: str) -> list[dict[str, Any]]:
        resp = self.request("GET", f"/repos/{check_repo(repo)}/contents/{quote(path)}", params={"ref": ref})
        items = resp.json()
        if not isinstance(items, list):
            raise GitHubError(NO_RECORDS_FOLDER, f"{path} is not a folder at {ref[:10]}.")
        return items

    def file_bytes(self, repo: str, path: str, ref: str) -> bytes:
        resp = self.request("GET", f"/repos/{check_repo(repo)}/contents/{quote(path)}",
                            params={"ref": ref}, accept="application/vnd.github.raw+json")
        return resp.content

    def download_folder(self, repo: str, folder: RecordsFolder, ref: str, dest: str | Path, *,
                        limits: Limits = DEFAULT_LIMITS, pr: int | None = None) -> FetchedFolder:
        """Write the folder's files (recursively) under `dest`, enforcing the upload limits on
        the listed sizes before downloading and on the bytes actually received."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        out = FetchedFolder(repo=repo, pr=pr, head_sha=ref, folder=folder, dest=dest)
        entries: list[tuple[str, dict]] = []
        pending = [folder.path]
        while pending:
            current = pending.pop()
            for item in self.list_dir(repo, current, ref):
                full = str(item.get("path") or "")
                if not full.startswith(folder.path + "/"):
                    raise InputError("unsafe_path", f"GitHub listed {full!r} outside {folder.path}.")
                rel = safe_member_path(full[len(folder.path) + 1:])
                kind = item.get("type")
                if kind == "dir":
                    pending.append(full)
                elif kind == "file":
                    entries.append((rel, item))
                else:   # symlink / submodule: never followed (auditing never needs them)
                    out.skipped.append(rel)
                if len(entries) > limits.max_members:
                    raise InputError(TOO_MANY_MEMBERS, f"The folder has more than "
                                     f"{limits.max_members:,} files.")
        for rel, item in entries:
            if int(item.get("size") or 0) > CONTENTS_MAX_FILE_BYTES:
                raise InputError(TOO_LARGE, f"{rel} is {int(item['size']):,} bytes; a records folder "
                                 "file must be under 100 MB (GitHub's contents API limit).")
        listed = sum(int(item.get("size") or 0) for _, item in entries)
        if listed > limits.max_total_bytes:
            raise InputError(TOO_LARGE, f"The folder holds {listed:,} bytes, over the "
                             f"{limits.max_total_bytes:,}-byte limit.")
        for rel, item in sorted(entries):
            data = self.file_bytes(repo, str(item["path"]), ref)
            out.total_bytes += len(data)
            if out.total_bytes > limits.max_total_bytes:
                raise InputError(TOO_LARGE, f"The folder holds more than "
                                 f"{limits.max_total_bytes:,} bytes.")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            out.files.append(rel)
        out.files.sort()
        return out

    # ---------------------------------------------------------------------------- writes
    def set_status(self, repo: str, sha: str, state: str, description: str,
                   target_url: str | None = None, context: str = STATUS_CONTEXT) -> dict[str, Any]:
        if state not in ("error", "failure", "pending", "success"):
            raise ValueError(f"bad commit status state {state!r}")
        body: dict[str, Any] = {"state": state, "context": context,
                                "description": description[:139]}
        if target_url:
            body["target_url"] = target_url
        return self.request("POST", f"/repos/{check_repo(repo)}/statuses/{quote(sha)}", json=body).json()

    def login(self) -> str | None:
        """Our own login (to only ever edit our comments); None for tokens that cannot ask
        (GitHub App installation tokens)."""
        if self._login is False:
            try:
                self._login = str(self.request("GET", "/user").json().get("login") or "") or None
            except GitHubError:
                self._login = None
        return self._login or None

    def upsert_sticky_comment(self, repo: str, pr: int, body: str,
                              marker: str = STICKY_MARKER) -> tuple[int, bool]:
        """Edit our marked comment on the PR, or create it. Returns (comment id, created)."""
        check_repo(repo)
        text = marker + "\n" + body
        if len(text) > MAX_COMMENT_CHARS:
            text = text[:MAX_COMMENT_CHARS - 60] + "\n\n… (truncated; see the full report)"
        me = self.login()
        ours = [c for c in self.paginate(f"/repos/{repo}/issues/{int(pr)}/comments")
                if marker in str(c.get("body") or "")
                and (me is None or str((c.get("user") or {}).get("login")) == me)]
        for c in ours:   # oldest first; without a login, copycats are refused by GitHub
            cid = int(c["id"])
            try:
                self.request("PATCH", f"/repos/{repo}/issues/comments/{cid}", json={"body": text})
                return cid, False
            except GitHubError as exc:   # someone else's comment carrying our marker, or deleted
                if exc.code not in (GITHUB_AUTH, GITHUB_NOT_FOUND):
                    raise
        created = self.request("POST", f"/repos/{repo}/issues/{int(pr)}/comments", json={"body": text}).json()
        if me is None and isinstance(created.get("user"), dict) and created["user"].get("login"):
            self._login = str(created["user"]["login"])   # now we know who we are
        return int(created["id"]), True


def _rate_limited(resp: httpx.Response) -> bool:
    """GitHub's primary (remaining 0) or secondary ("secondary rate limit") limit on a 403."""
    if resp.status_code != 403:
        return False
    if resp.headers.get("x-ratelimit-remaining") == "0" or resp.headers.get("retry-after"):
        return True
    try:
        return "rate limit" in str(resp.json().get("message", "")).lower()
    except Exception:
        return False


def fetch_pr_folder(repo: str, pr: int, head_sha: str | None, dest: str | Path, *,
                    client: GitHubClient | None = None,
                    limits: Limits = DEFAULT_LIMITS) -> FetchedFolder:
    """Download the one records folder PR `pr` of `repo` adds or changes, at `head_sha` (the
    PR's current head when None), into `dest` (dest becomes the submission root).

    Called by the intake task for GitHub submissions. Raises GitHubError (network, auth, no or
    several folders) or rules.errors.InputError (limits, unsafe paths)."""
    own = client is None
    gh = client or GitHubClient.from_settings()
    try:
        if not head_sha:
            head_sha = str(gh.pull_request(repo, pr)["head"]["sha"])
        folder = find_records_folder(gh.pr_files(repo, pr))
        return gh.download_folder(repo, folder, head_sha, dest, limits=limits, pr=pr)
    finally:
        if own:
            gh.close()


__all__ = ["GitHubClient", "GitHubError", "FetchedFolder", "RecordsFolder", "fetch_pr_folder",
           "find_records_folder", "STICKY_MARKER", "STATUS_CONTEXT"]
