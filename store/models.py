"""The service's tables (SQLAlchemy 2 typed models). The schema is created by the Alembic
migrations in `store/migrations/`; `tests/service/test_store_db.py` checks the two agree."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Timestamps are stored as naive UTC and always come back timezone-aware (SQLite keeps no
    zone, PostgreSQL would convert to the session zone: both read the same here)."""
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# Submission states (service.md §3). `reported` is the moment the verdict is stored; the
# terminal state then says what it was.
RECEIVED, VALIDATING, QUEUED, RUNNING, JUDGING, REPORTED = (
    "received", "validating", "queued", "running", "judging", "reported")
PASSED, FAILED, NEEDS_REVIEW, ERROR_INFRA, CANCELLED = (
    "passed", "failed", "needs_review", "error_infra", "cancelled")
STATES = (RECEIVED, VALIDATING, QUEUED, RUNNING, JUDGING, REPORTED,
          PASSED, FAILED, NEEDS_REVIEW, ERROR_INFRA, CANCELLED)
TERMINAL = frozenset({PASSED, FAILED, NEEDS_REVIEW, ERROR_INFRA, CANCELLED})

# Job states
JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED = (
    "queued", "running", "done", "failed", "cancelled")


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Identity: the records folder's content hash for uploads; for GitHub sources a hash of
    # (repo, pr/ref, head sha, path) until the folder is fetched. Same identity → same submission.
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    source_kind: Mapped[str] = mapped_column(String(16))          # upload | github
    repo: Mapped[str | None] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    ref: Mapped[str | None] = mapped_column(String(200))
    head_sha: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(500))
    name: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16), default=RECEIVED, index=True)
    outcome: Mapped[str | None] = mapped_column(String(16))        # pass | fail | needs_review
    policy: Mapped[str | None] = mapped_column(String(64))
    reproduce: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"seeds": [...], "nproc": N}
    archive_key: Mapped[str | None] = mapped_column(String(200))
    folder_key: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notify_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                 onupdate=utcnow)

    jobs: Mapped[list[AuditJob]] = relationship(back_populates="submission",
                                                 order_by="AuditJob.id")
    runs: Mapped[list[Run]] = relationship(back_populates="submission", order_by="Run.id")
    transitions: Mapped[list[StateTransition]] = relationship(
        back_populates="submission", order_by="StateTransition.id")


class AuditJob(Base):
    __tablename__ = "audit_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"),
                                               index=True)
    kind: Mapped[str] = mapped_column(String(16))                  # static | reproduce
    state: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float | None] = mapped_column(Float)

    submission: Mapped[Submission] = relationship(back_populates="jobs")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"),
                                               index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("audit_jobs.id", ondelete="SET NULL"))
    seed: Mapped[int | None] = mapped_column(Integer)
    nproc: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|ok|crashed|timeout|infra_error
    exit_code: Mapped[int | None] = mapped_column(Integer)
    log_key: Mapped[str | None] = mapped_column(String(200))
    trace_key: Mapped[str | None] = mapped_column(String(200))
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)   # start, first_step, train_end, end
    gpu: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    submission: Mapped[Submission] = relationship(back_populates="runs")


class Verdict(Base):
    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"),
                                               unique=True)
    outcome: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str | None] = mapped_column(String(64))
    basis: Mapped[str] = mapped_column(String(16), default="static")   # static | reproduced
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)          # bumped on every replace
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                 onupdate=utcnow)


class StateTransition(Base):
    __tablename__ = "state_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"),
                                               index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="transitions")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # the plaintext is never stored
    role: Mapped[str] = mapped_column(String(16))                       # submit | admin
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(100), unique=True)  # X-GitHub-Delivery
    event: Mapped[str] = mapped_column(String(50))
    action: Mapped[str | None] = mapped_column(String(50))
    repo: Mapped[str | None] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    submission_id: Mapped[str | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), default="received")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
