"""/v1/submissions: intake, status, verdict (JSON), report (HTML), run logs, admin re-run/cancel.
Routes stay thin: the work is in `api.intake`, `store.repo` and the worker."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from store import repo
from store.models import TERMINAL, Submission

from .. import intake
from ..deps import AdminDep, BlobsDep, ReaderDep, SessionDep, SettingsDep, SubmitterDep
from ..errors import ApiError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/submissions", tags=["submissions"])


class GitHubSourceIn(BaseModel):
    """A submission named by GitHub coordinates: a PR, or a repository ref + folder path."""
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(examples=["openai/parameter-golf"], max_length=200)
    pr: int | None = Field(default=None, gt=0, examples=[1060])
    ref: str | None = Field(default=None, max_length=200)
    path: str | None = Field(default=None, max_length=500)
    head_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,64}$")
    policy: str | None = None
    seeds: list[int] | None = Field(default=None, description="reproduce these seeds (admin)")
    nproc: int | None = None


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary",
                             "description": "zip or tar.gz of one records folder"},
                    "policy": {"type": "string"},
                    "seeds": {"type": "string", "description": "comma-separated (admin)"},
                    "nproc": {"type": "integer"}}}},
            "application/json": {"schema": GitHubSourceIn.model_json_schema()},
        },
    },
}


def _get(session, submission_id: str) -> Submission:  # noqa: ANN001
    sub = repo.get_submission(session, submission_id) if len(submission_id) <= 64 else None
    if sub is None:
        raise ApiError(404, "submission_not_found", f"There is no submission {submission_id!r}.")
    return sub


def _accepted(result: intake.Accepted) -> JSONResponse:
    return JSONResponse(result.to_json(), status_code=202,
                        headers={"Location": f"/v1/submissions/{result.submission_id}"})


@router.post("", status_code=202, openapi_extra=_UPLOAD_DOC,
             summary="Submit a records folder (archive upload) or a GitHub PR / ref + path")
async def create_submission(request: Request, settings: SettingsDep, blobs: BlobsDep,
                            caller: SubmitterDep) -> JSONResponse:
    ctype = (request.headers.get("content-type") or "").lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise intake.too_large(settings)
    is_admin = caller is not None and caller.is_admin
    sessions = request.app.state.sessionmaker
    if ctype.startswith("application/json"):
        try:
            src = GitHubSourceIn.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ())) or "body"
            raise ApiError(422, "invalid_request", f"{where}: {first.get('msg')}.") from exc
        policy = intake.check_policy(src.policy)
        reproduce = intake.check_reproduce(src.seeds, src.nproc, is_admin)
        result = await run_in_threadpool(
            intake.accept_github, settings=settings, sessions=sessions, repo_name=src.repo,
            pr=src.pr, ref=src.ref, path=src.path, head_sha=src.head_sha, policy=policy,
            reproduce=reproduce)
        return _accepted(result)
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       "Send multipart/form-data with a `file` field, or JSON naming a GitHub source.")
    try:
        form = await request.form(max_files=1, max_fields=10)
    except ApiError:
        raise
    except Exception as exc:  # malformed multipart
        raise ApiError(400, "bad_multipart", "The multipart body could not be read.") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "The form has no `file` field with an archive.")
        policy = intake.check_policy(str(form.get("policy") or "") or None)
        seeds_raw = str(form.get("seeds") or "").strip()
        try:
            seeds = [int(x) for x in seeds_raw.split(",") if x.strip()] if seeds_raw else None
            nproc = int(str(form.get("nproc"))) if form.get("nproc") else None
        except ValueError as exc:
            raise ApiError(400, "bad_reproduce", "`seeds` must be comma-separated integers.") from exc
        reproduce = intake.check_reproduce(seeds, nproc, is_admin)
        with tempfile.TemporaryDirectory(prefix="pgolf-post-", dir=blobs.root / "tmp") as tmp:
            dest = Path(tmp) / intake.upload_name(upload.filename)
            await run_in_threadpool(_copy_upload, upload, dest, settings)
            result = await run_in_threadpool(
                intake.accept_archive, dest, settings=settings, blobs=blobs, sessions=sessions,
                policy=policy, reproduce=reproduce)
    finally:
        await form.close()
    return _accepted(result)


def _copy_upload(upload: UploadFile, dest: Path, settings) -> None:  # noqa: ANN001
    upload.file.seek(0)
    intake.save_upload_chunks(iter(lambda: upload.file.read(1 << 20), b""), dest,
                              settings.max_upload_bytes, settings)


@router.get("", summary="Recent submissions")
def list_submissions(session: SessionDep, _reader: ReaderDep, state: str | None = None,
                     limit: int = 50) -> dict[str, Any]:
    from sqlalchemy import select
    q = select(Submission).order_by(Submission.created_at.desc()).limit(max(1, min(limit, 500)))
    if state:
        q = q.where(Submission.state == state)
    return {"submissions": [{"id": s.id, "name": s.name, "state": s.state, "outcome": s.outcome,
                             "source": s.source_kind, "created_at": s.created_at.isoformat()}
                            for s in session.scalars(q)]}


@router.get("/{submission_id}", summary="A submission: state, history, jobs, runs")
def get_submission(submission_id: str, session: SessionDep, _reader: ReaderDep) -> dict[str, Any]:
    return intake.submission_json(_get(session, submission_id))


def _load_verdict(request: Request, submission_id: str):  # noqa: ANN202
    """(json bytes, etag) of a stored verdict; a problem when there is none (yet)."""
    with request.app.state.sessionmaker() as session:
        sub = _get(session, submission_id)
        v = repo.get_verdict(session, submission_id)
        if v is None:
            if sub.state in TERMINAL:
                raise ApiError(409, "no_verdict",
                               f"The submission ended {sub.state} without a verdict"
                               + (f" ({sub.error_code}: {sub.error_message})" if sub.error_code else "")
                               + ".")
            raise ApiError(409, "verdict_not_ready",
                           f"The audit is not finished yet (state: {sub.state}).",
                           {"Retry-After": "2"})
        body = json.dumps(v.body, separators=(",", ":")).encode()
        return body, f'"{submission_id}-{v.version}"'


@router.get("/{submission_id}/verdict", summary="The verdict (JSON, verdict.md)")
async def get_verdict(submission_id: str, request: Request, _reader: ReaderDep) -> Response:
    # Cached public reads never get here (api.verdict_cache.VerdictFastPath answers them); this
    # is a miss, an expired entry being refreshed, or a request with a token: read the store.
    body, etag = await run_in_threadpool(_load_verdict, request, submission_id)
    item = request.app.state.verdict_cache.put(submission_id, body, etag)
    if request.headers.get("if-none-match") == item.etag:
        return Response(status_code=304, headers={"ETag": item.etag})
    return Response(item.body, media_type="application/json", headers={"ETag": item.etag})


@router.get("/{submission_id}/report", response_class=HTMLResponse,
            summary="The verdict as an HTML report")
def get_report(submission_id: str, session: SessionDep, blobs: BlobsDep,
               _reader: ReaderDep) -> HTMLResponse:
    from ..report_page import report_html

    sub = _get(session, submission_id)
    v = repo.get_verdict(session, submission_id)
    return HTMLResponse(report_html(sub, v.body if v else None, blobs))


@router.get("/{submission_id}/runs/{run}/log", summary="A reproduction run's log (streamed)",
            response_class=StreamingResponse)
def get_run_log(submission_id: str, run: str, session: SessionDep, blobs: BlobsDep,
                _reader: ReaderDep, offset: int = 0) -> StreamingResponse:
    _get(session, submission_id)
    r = repo.get_run(session, submission_id, run)
    if r is None:
        raise ApiError(404, "run_not_found", f"The submission has no run {run!r}.")
    if not r.log_key or not blobs.exists(r.log_key):
        raise ApiError(404, "log_not_found", "This run has no log yet.")
    size = blobs.size(r.log_key)
    return StreamingResponse(blobs.iter_log(r.log_key, offset), media_type="text/plain; charset=utf-8",
                             headers={"X-Log-Size": str(size), "X-Run-Status": r.status})


@router.post("/{submission_id}/rerun", status_code=202, summary="Audit again (admin)")
def rerun(submission_id: str, request: Request, session: SessionDep, settings: SettingsDep,
          caller: AdminDep) -> JSONResponse:
    from worker.enqueue import EnqueueError, enqueue_audit

    sub = _get(session, submission_id)
    if sub.state not in TERMINAL:
        raise ApiError(409, "in_progress", f"The submission is still {sub.state}; cancel it first.")
    repo.transition(session, sub, "received", "admin_rerun", f"re-run by {caller.name}")
    repo.delete_verdict(session, sub.id)
    sub.outcome = None
    session.commit()
    request.app.state.verdict_cache.evict(sub.id)
    queued = True
    try:
        enqueue_audit(sub.id, settings=settings)
    except EnqueueError as exc:
        log.warning("re-run of %s stored, not yet queued: %s", sub.id, exc)
        queued = False
    return JSONResponse({"id": sub.id, "state": sub.state, "queued": queued}, status_code=202,
                        headers={"Location": f"/v1/submissions/{sub.id}"})


@router.post("/{submission_id}/cancel", summary="Cancel a pending audit (admin)")
def cancel(submission_id: str, request: Request, session: SessionDep,
           caller: AdminDep) -> dict[str, Any]:
    sub = _get(session, submission_id)
    if sub.state in TERMINAL:
        raise ApiError(409, "already_finished", f"The submission already ended {sub.state}.")
    if not repo.can_transition(sub.state, "cancelled"):
        raise ApiError(409, "cannot_cancel", f"A submission that is {sub.state} cannot be cancelled.")
    jobs = repo.cancel_jobs(session, sub.id)
    repo.transition(session, sub, "cancelled", "admin_cancel", f"cancelled by {caller.name}")
    session.commit()
    request.app.state.verdict_cache.evict(sub.id)
    _revoke([j.celery_task_id for j in jobs if j.celery_task_id], request)
    return {"id": sub.id, "state": sub.state, "cancelled_jobs": [j.id for j in jobs]}


def _revoke(task_ids: list[str], request: Request) -> None:
    """Best effort: a revoked message is dropped by workers; a task already running sees the
    cancelled state at its next step and stops without writing."""
    if not task_ids or not request.app.state.settings.broker_is_redis:
        return
    try:
        from worker.app import sender_for
        sender_for(request.app.state.settings).control.revoke(task_ids)
    except Exception as exc:  # noqa: BLE001
        log.info("revoke of %s skipped: %s", task_ids, exc)
