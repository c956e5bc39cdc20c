"""Publishing work: the API (and the webhook intake) call `enqueue_audit`.

The job row is committed *before* the message is published, so the store always knows about the
work: if the broker is down, `enqueue_audit` raises `EnqueueError` but the job stays `queued`
with no publish time, and the sweeper publishes it once the broker is back. Nothing is lost.
"""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from store import repo
from store.db import session_scope
from store.models import JOB_QUEUED, JOB_RUNNING, AuditJob
from store.settings import Settings, get_settings

from .app import TASK_AUDIT, TASK_JUDGE, TASK_REPRODUCE, sender_for

log = logging.getLogger(__name__)


class EnqueueError(Exception):
    """The broker did not take the message; the job is recorded and the sweeper will retry."""

    code = "broker_unavailable"


def _active_static_job(session: Session, submission_id: str) -> AuditJob | None:
    job = repo.latest_job(session, submission_id, "static")
    if job is not None and job.state in (JOB_QUEUED, JOB_RUNNING):
        return job
    return None


def publish(settings: Settings, task: str, args: list, *, queue: str, job_id: int | None) -> str:
    """Send one task message; returns its id. Raises EnqueueError when the broker refuses."""
    app = sender_for(settings)
    try:
        res = app.send_task(task, args=args, queue=queue,
                            retry=settings.enqueue_retries > 0,
                            retry_policy={"max_retries": settings.enqueue_retries,
                                          "interval_start": 0.2, "interval_step": 0.5,
                                          "interval_max": 1.0})
    except Exception as exc:  # kombu/redis/sqlalchemy transport errors all mean "not published"
        raise EnqueueError(f"the broker did not accept the {task} message: "
                           f"{type(exc).__name__}: {exc}") from exc
    if job_id is not None:
        with session_scope(settings.database_url) as s:
            job = s.get(AuditJob, job_id)
            if job is not None:
                repo.mark_published(s, job, res.id)
    return res.id


def enqueue_audit(submission_id: str, *, settings: Settings | None = None) -> str:
    """Record a static-audit job for the submission (unless one is already pending) and publish
    it on the audit queue. Returns the Celery task id."""
    settings = settings or get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            raise KeyError(submission_id)
        job = _active_static_job(s, submission_id)
        if job is None:
            job = repo.create_job(s, sub, "static", deadline_s=settings.static_deadline_s)
        job_id = job.id
    return publish(settings, TASK_AUDIT, [submission_id], queue=settings.queue_audit,
                   job_id=job_id)


def enqueue_reproduce(submission_id: str, seed: int | None, nproc: int, *, job_id: int,
                      settings: Settings | None = None) -> str:
    """Publish one seed of a reproduction on the GPU queue."""
    settings = settings or get_settings()
    return publish(settings, TASK_REPRODUCE, [submission_id, seed, nproc, job_id],
                   queue=settings.queue_gpu, job_id=job_id)


def enqueue_judge(submission_id: str, *, settings: Settings | None = None) -> str:
    """Publish the judging of a submission whose reproduction runs are all finished."""
    settings = settings or get_settings()
    return publish(settings, TASK_JUDGE, [submission_id], queue=settings.queue_audit, job_id=None)
