"""The Celery app, built from `store.settings.Settings`.

Two queues: `audit` (CPU: intake, static audit, judging, notify, sweeper) and `gpu`
(reproduction runs). Every task is acknowledged *late* (after it finishes) and rejected back to
the queue if its worker process dies, so a crash never loses work; tasks are idempotent (keyed by
submission id, guarded by the job claim in `store.repo.claim_job`) so a redelivery never
duplicates it. Prefetch is 1: a long GPU job never sits reserved behind another.

The store, not the broker, is the source of truth: a job lost by the broker (Redis restarted
without persistence, an embedded broker file deleted) is published again by the sweeper.
"""
from __future__ import annotations

from celery import Celery

from store.settings import Settings, get_settings

# Task names are strings so the API can enqueue by name without importing worker code.
TASK_AUDIT = "pgolf.audit"
TASK_JUDGE = "pgolf.judge"
TASK_NOTIFY = "pgolf.notify"
TASK_REPRODUCE = "pgolf.reproduce"
TASK_SWEEP = "pgolf.sweep"


def celery_config(settings: Settings) -> dict:
    transport_options: dict = {}
    if settings.broker_is_redis:
        transport_options = {
            "visibility_timeout": settings.redis_visibility_timeout_s,
            "socket_connect_timeout": settings.broker_connect_timeout_s,
            "socket_timeout": max(settings.broker_connect_timeout_s, 10.0),
        }
    audit_q, gpu_q = settings.queue_audit, settings.queue_gpu
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_ignore_result": settings.result_backend is None,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_connect_timeout_s,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_default_queue": audit_q,
        "task_create_missing_queues": True,
        "task_routes": {
            TASK_REPRODUCE: {"queue": gpu_q},
            "pgolf.*": {"queue": audit_q},
        },
        # the reproduction's own runner kills a run at its budget; this is the outer backstop
        "task_time_limit": settings.reproduce_deadline_s + 300,
        "beat_schedule": {
            "sweep-stuck-jobs": {"task": TASK_SWEEP, "schedule": settings.sweeper_interval_s,
                                 "options": {"queue": audit_q, "expires": settings.sweeper_interval_s}},
        },
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("pgolf_audit", include=["worker.tasks", "worker.sweeper"])
    app.conf.update(celery_config(settings))
    app.conf.pgolf_settings = settings
    return app


_senders: dict[tuple, Celery] = {}


def sender_for(settings: Settings) -> Celery:
    """A Celery app used only to publish (one per broker URL per process)."""
    key = (settings.broker_url, settings.queue_audit, settings.queue_gpu)
    app = _senders.get(key)
    if app is None:
        app = _senders[key] = make_celery(settings)
    return app


# The app workers run (`celery -A worker.app` or `pgolf-audit worker`): tasks register on it.
celery_app = make_celery()
