"""The sweeper (Celery beat, every `sweeper_interval_s`): nothing stays stuck.

- A job past its deadline is failed with reason `deadline_exceeded`. Its submission goes to
  `error_infra`: the runner enforces the submission's own time budget inside the run, so a job
  still open at the (larger) deadline means the service failed — never the submitter.
- A `running` job whose worker stopped heart-beating (killed, OOM, node lost) goes back to
  `queued` and is published again; the next delivery takes it over (`repo.claim_job`).
- A `queued` job that was never published (broker down when the API enqueued) or not picked up
  within `requeue_queued_after_s` (the broker lost it, e.g. Redis restarted without persistence)
  is published again. Duplicate messages are harmless: only one delivery can claim the job.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from store import repo
from store.db import session_scope
from store.models import ERROR_INFRA, JOB_FAILED, QUEUED, RUNNING, TERMINAL, AuditJob
from store.settings import Settings, get_settings

from .app import TASK_SWEEP, celery_app

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    deadline_exceeded: list[int] = field(default_factory=list)
    requeued_stale: list[int] = field(default_factory=list)
    republished: list[int] = field(default_factory=list)
    publish_failed: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def sweep(settings: Settings | None = None) -> SweepReport:
    settings = settings or get_settings()
    report = SweepReport()
    to_publish: list[tuple[int, str, str, dict]] = []
    with session_scope(settings.database_url) as s:
        stuck = repo.list_stuck_jobs(s, stale_after_s=settings.job_stale_after_s,
                                     requeue_after_s=settings.requeue_queued_after_s)
        for job in stuck.past_deadline:
            msg = (f"the {job.kind} job passed its deadline ({job.deadline.isoformat()}) without "
                   "finishing; this is an infrastructure fault, not counted against the submission")
            repo.finish_job(s, job, JOB_FAILED, error_code="deadline_exceeded", error=msg)
            sub = job.submission
            if sub.state not in TERMINAL and repo.can_transition(sub.state, ERROR_INFRA):
                repo.transition(s, sub, ERROR_INFRA, "deadline_exceeded", msg)
            report.deadline_exceeded.append(job.id)
        for job in stuck.stale_running:
            repo.requeue_job(s, job, error_code="worker_lost",
                             error=f"worker {job.worker} stopped heart-beating; re-queued")
            sub = job.submission
            if job.kind == "reproduce" and sub.state == RUNNING:
                repo.transition(s, sub, QUEUED, "worker_lost", "the GPU worker died; re-queued")
            report.requeued_stale.append(job.id)
            to_publish.append((job.id, job.kind, job.submission_id, dict(job.params or {})))
        for job in stuck.unpublished:
            if job.submission.state in TERMINAL and job.submission.state != ERROR_INFRA:
                continue
            to_publish.append((job.id, job.kind, job.submission_id, dict(job.params or {})))
    for job_id, kind, submission_id, params in to_publish:
        if _publish(settings, job_id, kind, submission_id, params):
            if job_id not in report.requeued_stale:
                report.republished.append(job_id)
        else:
            report.publish_failed.append(job_id)
    if any(report.to_json().values()):
        log.info("sweep: %s", report.to_json())
    return report


def _publish(settings: Settings, job_id: int, kind: str, submission_id: str, params: dict) -> bool:
    from .enqueue import EnqueueError, enqueue_reproduce, publish
    from .app import TASK_AUDIT

    try:
        if kind == "reproduce":
            with session_scope(settings.database_url) as s:
                job = s.get(AuditJob, job_id)
                pending = [r.seed for r in job.submission.runs
                           if r.job_id == job_id and r.status in ("queued", "running")] if job else []
            for seed in pending or params.get("seeds", []):
                enqueue_reproduce(submission_id, seed, int(params.get("nproc", 1)), job_id=job_id,
                                  settings=settings)
        else:
            publish(settings, TASK_AUDIT, [submission_id], queue=settings.queue_audit,
                    job_id=job_id)
        return True
    except EnqueueError as exc:
        log.warning("sweep: job %s not published: %s", job_id, exc)
        return False


@celery_app.task(name=TASK_SWEEP)
def sweep_task() -> dict[str, list[int]]:
    return sweep().to_json()
