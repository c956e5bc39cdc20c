"""What `POST /v1/submissions` does, kept out of the route: receive the archive within the size
limit, read it with the rules' safe loader (nothing is stored when that refuses it), store the
folder and the archive, create or find the submission by its content hash, and enqueue it.

The archive is never executed or imported: `rules.submission.load_submission` only parses."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rules import errors as input_errors
from rules.errors import InputError
from store import repo
from store.blobs import BlobStore
from store.models import Submission
from store.settings import Settings
from worker.enqueue import EnqueueError, enqueue_audit
from worker.intake import store_folder

from .errors import ApiError

log = logging.getLogger(__name__)

# InputError codes that mean "too big" (413); every other input error is a 400.
_TOO_BIG = {input_errors.TOO_LARGE, input_errors.TOO_MANY_MEMBERS, input_errors.ZIP_BOMB}
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def input_error(exc: InputError) -> ApiError:
    return ApiError(413 if exc.code in _TOO_BIG else 400, exc.code, exc.message)


def too_large(settings: Settings) -> ApiError:
    return ApiError(413, input_errors.TOO_LARGE,
                    f"The upload is larger than the {settings.max_upload_bytes:,} bytes allowed.")


@dataclass
class Accepted:
    submission_id: str
    state: str
    duplicate: bool
    queued: bool                 # False when the broker refused: the sweeper publishes it later

    def to_json(self) -> dict[str, Any]:
        sid = self.submission_id
        return {"id": sid, "state": self.state, "duplicate": self.duplicate, "queued": self.queued,
                "links": {"self": f"/v1/submissions/{sid}",
                          "verdict": f"/v1/submissions/{sid}/verdict",
                          "report": f"/v1/submissions/{sid}/report"}}


def check_policy(policy: str | None) -> str | None:
    if not policy:
        return None
    from rules.policies import get_policy
    try:
        return get_policy(policy).id
    except InputError as exc:
        raise input_error(exc) from exc
    except (KeyError, ValueError) as exc:
        raise ApiError(400, "unknown_policy", f"There is no rule set called {policy!r}.") from exc


def check_reproduce(seeds: list[int] | None, nproc: int | None, is_admin: bool) -> dict | None:
    if not seeds:
        return None
    if not is_admin:
        raise ApiError(403, "reproduce_not_allowed",
                       "Only an admin token can ask for a GPU reproduction.")
    if len(seeds) > 16 or nproc not in (None, 1, 2, 4, 8):
        raise ApiError(400, "bad_reproduce", "Ask for at most 16 seeds and nproc 1, 2, 4 or 8.")
    return {"seeds": [int(s) for s in seeds], "nproc": int(nproc or 1)}


def save_upload_chunks(chunks, dest: Path, limit: int, settings: Settings) -> int:
    """Write an iterable of byte chunks to `dest`, refusing more than `limit` bytes."""
    total = 0
    with open(dest, "wb") as out:
        for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise too_large(settings)
            out.write(chunk)
    return total


def upload_name(filename: str | None) -> str:
    """A safe local file name for the upload (its stem names the submission when the archive
    has no top-level folder)."""
    base = os.path.basename((filename or "").replace("\\", "/")) or "upload.zip"
    return BlobStore.safe_name(base, "upload.zip")


def accept_archive(archive: Path, *, settings: Settings, blobs: BlobStore,
                   sessions: sessionmaker[Session], policy: str | None,
                   reproduce: dict | None) -> Accepted:
    """Validate + store an uploaded archive (already on local disk) and enqueue its audit."""
    from rules.archive import UNSUPPORTED_ARCHIVE, sniff

    try:
        if sniff(archive) is None:   # judged by content, never by the file name
            raise InputError(UNSUPPORTED_ARCHIVE if archive.stat().st_size else input_errors.BAD_ARCHIVE,
                             "The upload is not a zip, tar, tar.gz or tgz archive.")
        with tempfile.TemporaryDirectory(prefix="pgolf-upload-", dir=blobs.root / "tmp") as work:
            stored = store_folder(blobs, archive, workdir=Path(work))
    except InputError as exc:
        raise input_error(exc) from exc
    archive_key = blobs.put_file(archive)
    return _create_and_enqueue(settings, sessions, sha256=stored.sha256, source_kind="upload",
                               name=stored.name, content_sha256=stored.sha256,
                               folder_key=stored.folder_key, archive_key=archive_key,
                               policy=policy, reproduce=reproduce)


def accept_github(*, settings: Settings, sessions: sessionmaker[Session], repo_name: str,
                  pr: int | None, ref: str | None, path: str | None, head_sha: str | None,
                  policy: str | None, reproduce: dict | None) -> Accepted:
    """Record a GitHub source; the worker fetches the folder (the API never calls GitHub)."""
    if not _REPO_RE.match(repo_name) or ".." in repo_name:
        raise ApiError(400, "bad_repo", "`repo` must look like owner/name.")
    if pr is None and not (ref and path):
        raise ApiError(400, "bad_source", "Give `pr`, or both `ref` and `path`.")
    if path and (path.startswith("/") or ".." in path.split("/")):
        raise ApiError(400, input_errors.UNSAFE_PATH, "`path` must be a relative path in the repository.")
    identity = repo.github_identity(repo_name, pr=pr, ref=None if pr else ref,
                                    path=None if pr else path, head_sha=head_sha)
    return _create_and_enqueue(settings, sessions, sha256=identity, source_kind="github",
                               repo=repo_name, pr=pr, ref=None if pr else ref,
                               path=None if pr else path, head_sha=head_sha,
                               name=f"{repo_name}#{pr}" if pr else f"{repo_name}:{path}",
                               policy=policy, reproduce=reproduce)


def _create_and_enqueue(settings: Settings, sessions: sessionmaker[Session], *, sha256: str,
                        source_kind: str, **fields: Any) -> Accepted:
    with sessions() as s:
        sub, created = repo.create_or_get_submission(s, sha256=sha256, source_kind=source_kind,
                                                     **fields)
        retry = not created and sub.state == "error_infra"
        if retry:
            # the last attempt died of an infrastructure fault: sending it again is a retry,
            # not a new submission (and never counted against the submitter)
            repo.transition(s, sub, "received", "resubmitted", "submitted again after an "
                            "infrastructure error")
        s.commit()
        sid, state = sub.id, sub.state
    queued = True
    if created or retry:
        try:
            enqueue_audit(sid, settings=settings)
        except EnqueueError as exc:
            # the job row exists: the sweeper publishes it when the broker is back
            log.warning("submission %s stored, not yet queued: %s", sid, exc)
            queued = False
    return Accepted(submission_id=sid, state=state, duplicate=not created, queued=queued)


def submission_json(sub: Submission) -> dict[str, Any]:
    """The public view of a submission (GET /v1/submissions/{id})."""
    def ts(v):  # noqa: ANN001
        return v.isoformat() if v else None

    return {
        "id": sub.id, "sha256": sub.content_sha256 or (sub.sha256 if sub.source_kind == "upload" else None),
        "name": sub.name, "state": sub.state, "outcome": sub.outcome, "policy": sub.policy,
        "source": {"kind": sub.source_kind, "repo": sub.repo, "pr": sub.pr, "ref": sub.ref,
                   "path": sub.path, "head_sha": sub.head_sha},
        "error": ({"code": sub.error_code, "message": sub.error_message}
                  if sub.error_code else None),
        "reproduce": sub.reproduce,
        "created_at": ts(sub.created_at), "updated_at": ts(sub.updated_at),
        "notified_at": ts(sub.notified_at), "notify_error": sub.notify_error,
        "transitions": [{"from": t.from_state, "to": t.to_state, "reason": t.reason_code,
                         "message": t.message, "at": ts(t.at)} for t in sub.transitions],
        "jobs": [{"id": j.id, "kind": j.kind, "state": j.state, "attempts": j.attempts,
                  "deadline": ts(j.deadline), "started_at": ts(j.started_at),
                  "finished_at": ts(j.finished_at), "duration_s": j.duration_s,
                  "error": ({"code": j.error_code, "message": j.error} if j.error_code else None)}
                 for j in sub.jobs],
        "runs": [{"id": r.id, "seed": r.seed, "nproc": r.nproc, "status": r.status,
                  "exit_code": r.exit_code, "timings": r.timings, "gpu": r.gpu,
                  "artifact_bytes": r.artifact_bytes, "error": r.error,
                  "log": f"/v1/submissions/{sub.id}/runs/{r.id}/log" if r.log_key else None}
                 for r in sub.runs],
        "links": {"verdict": f"/v1/submissions/{sub.id}/verdict",
                  "report": f"/v1/submissions/{sub.id}/report"},
    }
