"""The store's operations, as functions of a Session (what routes and tasks call).

The caller owns the transaction: these functions flush, never commit, so a route or a task can
combine several of them atomically.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import (
    CANCELLED, ERROR_INFRA, FAILED, JOB_CANCELLED, JOB_DONE, JOB_QUEUED, JOB_RUNNING,
    JUDGING, NEEDS_REVIEW, PASSED, QUEUED, RECEIVED, REPORTED, RUNNING, VALIDATING,
    ApiToken, AuditJob, Run, StateTransition, Submission, Verdict, WebhookDelivery, utcnow,
)

# ---------------------------------------------------------------------------------------------
# Submissions
# ---------------------------------------------------------------------------------------------


def github_identity(repo: str, *, pr: int | None = None, ref: str | None = None,
                    path: str | None = None, head_sha: str | None = None) -> str:
    """The identity hash of a GitHub source before its folder is fetched: the same PR at the same
    head (or the same ref + path) is the same submission."""
    key = f"github\0{repo.lower()}\0{pr or ''}\0{ref or ''}\0{path or ''}\0{head_sha or ''}"
    return hashlib.sha256(key.encode()).hexdigest()


def get_submission(session: Session, submission_id: str) -> Submission | None:
    return session.get(Submission, submission_id)


def create_or_get_submission(session: Session, *, sha256: str, source_kind: str,
                             **fields: Any) -> tuple[Submission, bool]:
    """The submission with identity `sha256`, creating it (state `received`) if new.

    Returns (submission, created). Safe under concurrency: two requests racing with the same
    content end with one row, the loser reading the winner's."""
    existing = session.scalar(select(Submission).where(Submission.sha256 == sha256))
    if existing is not None:
        return existing, False
    sub = Submission(sha256=sha256, source_kind=source_kind, state=RECEIVED, **fields)
    try:
        with session.begin_nested():
            session.add(sub)
            session.flush()
            session.add(StateTransition(submission_id=sub.id, from_state=None, to_state=RECEIVED,
                                        reason_code="received",
                                        message=f"received from {source_kind}"))
            session.flush()
    except IntegrityError:
        existing = session.scalar(select(Submission).where(Submission.sha256 == sha256))
        if existing is None:
            raise
        return existing, False
    return sub, True


# Allowed transitions (service.md §3). Re-entries exist for recovery: a redelivered audit goes
# back to `validating`, a run whose worker died goes back to `queued`, an infrastructure error
# is retried, and an admin re-run starts over from `received`. `validating → validating` records
# an audit restarted by another worker after the first one died mid-way.
ALLOWED: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({VALIDATING, FAILED, ERROR_INFRA, CANCELLED}),
    VALIDATING: frozenset({VALIDATING, JUDGING, FAILED, ERROR_INFRA, CANCELLED}),
    QUEUED: frozenset({RUNNING, FAILED, ERROR_INFRA, CANCELLED}),
    RUNNING: frozenset({JUDGING, QUEUED, FAILED, ERROR_INFRA, CANCELLED}),
    JUDGING: frozenset({REPORTED, QUEUED, VALIDATING, FAILED, ERROR_INFRA, CANCELLED}),
    REPORTED: frozenset({PASSED, FAILED, NEEDS_REVIEW}),
    ERROR_INFRA: frozenset({VALIDATING, QUEUED, JUDGING, RECEIVED, CANCELLED}),
    PASSED: frozenset({RECEIVED}),
    FAILED: frozenset({RECEIVED}),
    NEEDS_REVIEW: frozenset({RECEIVED}),
    CANCELLED: frozenset({RECEIVED}),
}
OUTCOME_STATE = {"pass": PASSED, "fail": FAILED, "needs_review": NEEDS_REVIEW}


class InvalidTransition(Exception):
    def __init__(self, from_state: str, to_state: str):
        super().__init__(f"cannot go from {from_state} to {to_state}")
        self.from_state, self.to_state = from_state, to_state


def can_transition(from_state: str, to_state: str) -> bool:
    return to_state in ALLOWED.get(from_state, frozenset())


def transition(session: Session, sub: Submission, to_state: str, reason_code: str,
               message: str = "", *, error_code: str | None = None) -> StateTransition:
    """Move `sub` to `to_state`, recording when and why. Raises InvalidTransition."""
    if not can_transition(sub.state, to_state):
        raise InvalidTransition(sub.state, to_state)
    row = StateTransition(submission_id=sub.id, from_state=sub.state, to_state=to_state,
                          reason_code=reason_code, message=message)
    session.add(row)
    sub.state = to_state
    sub.updated_at = utcnow()
    if to_state == ERROR_INFRA or error_code:
        # an error the submitter or operator must see (a failing verdict is not an error)
        sub.error_code = error_code or reason_code
        sub.error_message = message
    elif to_state in (RECEIVED, VALIDATING):
        sub.error_code = sub.error_message = None
    session.flush()
    return row


def counts_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Submission.state, func.count()).group_by(Submission.state))
    return {state: n for state, n in rows}


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


def save_verdict(session: Session, sub: Submission, body: dict[str, Any], *,
                 basis: str = "static") -> Verdict:
    """Store (or replace) the verdict of `sub`; idempotent for a redelivered task."""
    v = session.scalar(select(Verdict).where(Verdict.submission_id == sub.id))
    outcome = str(body.get("outcome"))
    if v is None:
        v = Verdict(submission_id=sub.id, outcome=outcome, policy=body.get("policy"),
                    basis=basis, body=body, version=1)
        session.add(v)
    else:
        v.outcome, v.policy, v.basis, v.body = outcome, body.get("policy"), basis, body
        v.version = (v.version or 0) + 1
        v.updated_at = utcnow()
    sub.outcome = outcome
    session.flush()
    return v


def get_verdict(session: Session, submission_id: str) -> Verdict | None:
    return session.scalar(select(Verdict).where(Verdict.submission_id == submission_id))


def delete_verdict(session: Session, submission_id: str) -> None:
    v = get_verdict(session, submission_id)
    if v is not None:
        session.delete(v)
        session.flush()


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def create_job(session: Session, sub: Submission, kind: str, *, deadline_s: float,
               params: dict[str, Any] | None = None) -> AuditJob:
    job = AuditJob(submission_id=sub.id, kind=kind, state=JOB_QUEUED, attempts=0,
                   deadline=utcnow() + timedelta(seconds=deadline_s), params=params)
    session.add(job)
    session.flush()
    return job


def latest_job(session: Session, submission_id: str, kind: str | None = None) -> AuditJob | None:
    q = select(AuditJob).where(AuditJob.submission_id == submission_id)
    if kind:
        q = q.where(AuditJob.kind == kind)
    return session.scalar(q.order_by(AuditJob.id.desc()).limit(1))


def claim_job(session: Session, job_id: int, *, worker: str, stale_after_s: float,
              now: datetime | None = None) -> bool:
    """Atomically take a job: queued, or running with a heartbeat older than `stale_after_s`
    (its worker died). Two deliveries of one task cannot both win."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stale_after_s)
    res = session.execute(
        update(AuditJob)
        .where(AuditJob.id == job_id,
               or_(AuditJob.state == JOB_QUEUED,
                   and_(AuditJob.state == JOB_RUNNING,
                        or_(AuditJob.heartbeat_at.is_(None), AuditJob.heartbeat_at < cutoff))))
        .values(state=JOB_RUNNING, attempts=AuditJob.attempts + 1, worker=worker,
                started_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False))
    session.flush()
    claimed = res.rowcount == 1
    if claimed:
        job = session.get(AuditJob, job_id)
        if job is not None:
            session.refresh(job)
    return claimed


def heartbeat(session: Session, job_id: int) -> None:
    session.execute(update(AuditJob).where(AuditJob.id == job_id, AuditJob.state == JOB_RUNNING)
                    .values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))
    session.flush()


def finish_job(session: Session, job: AuditJob, state: str, *, error_code: str | None = None,
               error: str | None = None) -> None:
    now = utcnow()
    job.state = state
    job.finished_at = now
    job.error_code, job.error = error_code, error
    if job.started_at is not None:
        job.duration_s = max(0.0, (now - job.started_at).total_seconds())
    session.flush()


def finish_claimed_job(session: Session, job_id: int, *, worker: str, attempt: int) -> bool:
    """Mark a job done only if it is still held by this (worker, attempt): the one atomic step
    that decides which of two racing deliveries writes the result."""
    now = utcnow()
    job = session.get(AuditJob, job_id)
    if job is None:
        return False
    duration = (now - job.started_at).total_seconds() if job.started_at else None
    res = session.execute(
        update(AuditJob)
        .where(AuditJob.id == job_id, AuditJob.state == JOB_RUNNING, AuditJob.worker == worker,
               AuditJob.attempts == attempt)
        .values(state=JOB_DONE, finished_at=now, duration_s=duration, error_code=None, error=None)
        .execution_options(synchronize_session=False))
    session.flush()
    if res.rowcount != 1:
        return False
    session.refresh(job)
    return True


def requeue_job(session: Session, job: AuditJob, *, error_code: str | None = None,
                error: str | None = None) -> None:
    """Give a job back to the queue (infrastructure retry, or a worker that died)."""
    job.state = JOB_QUEUED
    job.worker = None
    job.heartbeat_at = None
    job.published_at = None
    if error_code:
        job.error_code, job.error = error_code, error
    session.flush()


def mark_published(session: Session, job: AuditJob, task_id: str) -> None:
    job.celery_task_id = task_id
    job.published_at = utcnow()
    session.flush()


def cancel_jobs(session: Session, submission_id: str) -> list[AuditJob]:
    jobs = list(session.scalars(select(AuditJob).where(
        AuditJob.submission_id == submission_id,
        AuditJob.state.in_((JOB_QUEUED, JOB_RUNNING)))))
    for job in jobs:
        finish_job(session, job, JOB_CANCELLED, error_code="cancelled", error="cancelled by an admin")
    return jobs


@dataclass
class StuckJobs:
    past_deadline: list[AuditJob]     # queued/running beyond their deadline
    stale_running: list[AuditJob]     # running, no heartbeat for `stale_after_s`: worker died
    unpublished: list[AuditJob]       # queued, never published (or a static job not picked up in time)


def list_stuck_jobs(session: Session, *, stale_after_s: float, requeue_after_s: float,
                    now: datetime | None = None) -> StuckJobs:
    now = now or utcnow()
    active = (JOB_QUEUED, JOB_RUNNING)
    past = list(session.scalars(select(AuditJob).where(AuditJob.state.in_(active),
                                                       AuditJob.deadline < now)))
    past_ids = {j.id for j in past}
    stale_cut = now - timedelta(seconds=stale_after_s)
    stale = [j for j in session.scalars(select(AuditJob).where(
        AuditJob.state == JOB_RUNNING,
        or_(AuditJob.heartbeat_at.is_(None), AuditJob.heartbeat_at < stale_cut)))
        if j.id not in past_ids]
    pub_cut = now - timedelta(seconds=requeue_after_s)
    # Never published (broker down at enqueue), or a static job not picked up in time (the broker
    # lost it). A reproduce job legitimately waits hours behind another run on the GPU queue, so
    # it is only republished when it was never published.
    unpublished = [j for j in session.scalars(select(AuditJob).where(
        AuditJob.state == JOB_QUEUED,
        or_(AuditJob.published_at.is_(None),
            and_(AuditJob.kind == "static", AuditJob.published_at < pub_cut))))
        if j.id not in past_ids]
    return StuckJobs(past, stale, unpublished)


def queued_job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(AuditJob.kind, func.count())
                           .where(AuditJob.state == JOB_QUEUED).group_by(AuditJob.kind))
    return {k: n for k, n in rows}


# ---------------------------------------------------------------------------------------------
# Runs (reproduction; the runner fills them)
# ---------------------------------------------------------------------------------------------


def create_run(session: Session, sub: Submission, *, seed: int | None, nproc: int | None = None,
               job: AuditJob | None = None, log_key: str | None = None) -> Run:
    run = Run(submission_id=sub.id, job_id=job.id if job else None, seed=seed, nproc=nproc,
              status="queued", log_key=log_key)
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run: Run, *, status: str, exit_code: int | None = None,
               timings: dict[str, Any] | None = None, gpu: dict[str, Any] | None = None,
               artifact_bytes: int | None = None, trace_key: str | None = None,
               error: str | None = None) -> Run:
    run.status, run.exit_code, run.error = status, exit_code, error
    if timings is not None:
        run.timings = timings
    if gpu is not None:
        run.gpu = gpu
    if artifact_bytes is not None:
        run.artifact_bytes = artifact_bytes
    if trace_key is not None:
        run.trace_key = trace_key
    run.finished_at = utcnow()
    session.flush()
    return run


def get_run(session: Session, submission_id: str, run_ref: str) -> Run | None:
    """A run by its id, or by `seed-<n>`/`<n>` matching its seed (latest such run)."""
    ref = run_ref.removeprefix("seed-").removeprefix("seed")
    q = select(Run).where(Run.submission_id == submission_id)
    if run_ref.startswith("seed"):
        if not ref.lstrip("-").isdigit():
            return None
        return session.scalar(q.where(Run.seed == int(ref)).order_by(Run.id.desc()).limit(1))
    if not run_ref.isdigit():
        return None
    return session.scalar(q.where(Run.id == int(run_ref)))


# ---------------------------------------------------------------------------------------------
# API tokens
# ---------------------------------------------------------------------------------------------

ROLES = ("submit", "admin")
TOKEN_PREFIX = "pga_"


def _hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, role: str) -> tuple[ApiToken, str]:
    """A new token; the plaintext is returned once and only its sha256 is stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    tok = ApiToken(name=name, token_sha256=_hash_token(plaintext), role=role, revoked=False)
    session.add(tok)
    session.flush()
    return tok, plaintext


def verify_token(session: Session, plaintext: str) -> ApiToken | None:
    """The live token matching `plaintext`, or None. Looks up by hash (the plaintext is never
    compared or stored) and confirms with a constant-time comparison."""
    if not plaintext:
        return None
    digest = _hash_token(plaintext)
    tok = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    if tok is None or tok.revoked or not hmac.compare_digest(tok.token_sha256, digest):
        return None
    return tok


def revoke_token(session: Session, name: str) -> bool:
    tok = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if tok is None:
        return False
    tok.revoked = True
    session.flush()
    return True


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


# ---------------------------------------------------------------------------------------------
# GitHub webhook deliveries
# ---------------------------------------------------------------------------------------------


def record_webhook_delivery(session: Session, *, delivery_id: str, event: str,
                            action: str | None = None, repo: str | None = None,
                            pr: int | None = None, head_sha: str | None = None,
                            status: str = "received") -> tuple[WebhookDelivery, bool]:
    """Record a delivery; returns (row, is_new). A redelivered id returns the first row and
    False, so the caller can answer 2xx without doing the work twice."""
    existing = session.scalar(select(WebhookDelivery)
                              .where(WebhookDelivery.delivery_id == delivery_id))
    if existing is not None:
        return existing, False
    row = WebhookDelivery(delivery_id=delivery_id, event=event, action=action, repo=repo, pr=pr,
                          head_sha=head_sha, status=status)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.scalar(select(WebhookDelivery)
                                  .where(WebhookDelivery.delivery_id == delivery_id))
        if existing is None:
            raise
        return existing, False
    return row, True


def link_delivery(session: Session, delivery: WebhookDelivery, submission: Submission | None,
                  status: str) -> None:
    delivery.submission_id = submission.id if submission else None
    delivery.status = status
    session.flush()


