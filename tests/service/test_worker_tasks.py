"""The worker's task functions run in-process on a real store (SQLite + blob dir): state
machine, idempotency, the three failure kinds, and the sweeper. (The same functions behind a real
Celery worker process are in test_worker_celery.py.)"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from store import repo
from store.blobs import BlobStore
from store.db import session_scope
from store.models import AuditJob, Verdict, utcnow
from worker.intake import store_folder
from worker.sweeper import sweep
from worker.tasks import InfraError, _record_infra_error, _record_internal_error, run_audit


def _submit(settings, folder: Path) -> str:
    from worker.enqueue import EnqueueError, enqueue_audit

    stored = store_folder(BlobStore(settings.blob_dir), folder)
    with session_scope(settings.database_url) as s:
        sub, _ = repo.create_or_get_submission(s, sha256=stored.sha256, source_kind="upload",
                                               name=stored.name, folder_key=stored.folder_key)
        sid = sub.id
    try:
        enqueue_audit(sid, settings=settings)
    except EnqueueError:
        pass
    return sid


def _state(settings, sid: str):
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        return sub.state, [(t.to_state, t.reason_code) for t in sub.transitions], \
            [(j.state, j.attempts, j.error_code) for j in sub.jobs]


def test_static_audit_walks_the_states(settings, record_folders) -> None:
    sid = _submit(settings, record_folders[0])
    outcome = run_audit(sid, settings)
    state, transitions, jobs = _state(settings, sid)
    assert outcome == state and state in ("passed", "failed", "needs_review")
    assert [t for t, _ in transitions] == ["received", "validating", "judging", "reported", state]
    assert jobs == [("done", 1, None)]
    with session_scope(settings.database_url) as s:
        v = repo.get_verdict(s, sid)
        assert v.basis == "static" and v.body["submission"]["track"] == "10min_16mb"
        assert repo.latest_job(s, sid, "static").duration_s is not None


def test_redelivery_does_not_duplicate_work(settings, record_folders) -> None:
    sid = _submit(settings, record_folders[0])
    first = run_audit(sid, settings)
    assert run_audit(sid, settings) == f"already_{first}"
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Verdict)) == 1
        assert repo.get_verdict(s, sid).version == 1
        assert len(repo.get_submission(s, sid).transitions) == 5


def test_a_live_claim_blocks_a_second_delivery(settings, record_folders) -> None:
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        job = repo.latest_job(s, sid, "static")
        assert repo.claim_job(s, job.id, worker="other", stale_after_s=300)
    assert run_audit(sid, settings) == "busy"


def test_takeover_after_a_dead_worker(settings, record_folders) -> None:
    """A worker died mid-audit (state validating, job running, no heartbeat since): the next
    delivery takes the job over and finishes it, counting the attempt."""
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        job = repo.latest_job(s, sid, "static")
        repo.claim_job(s, job.id, worker="dead", stale_after_s=300)
        repo.transition(s, sub, "validating", "audit_started")
        s.execute(update(AuditJob).where(AuditJob.id == job.id)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=settings.job_stale_after_s + 5)))
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    _, _, jobs = _state(settings, sid)
    assert jobs == [("done", 2, None)]


def test_bad_input_fails_cleanly_with_its_code(settings, tmp_path) -> None:
    """A stored folder the rules cannot read (here: no README, json, log or code) is the
    submitter's problem: `failed` with the input error's code, no retry."""
    folder = tmp_path / "2026-01-01_Empty"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    blobs = BlobStore(settings.blob_dir)
    key = blobs.put_tree(folder, "e" * 64, "2026-01-01_Empty")
    with session_scope(settings.database_url) as s:
        sub, _ = repo.create_or_get_submission(s, sha256="e" * 64, source_kind="upload",
                                               folder_key=key)
        repo.create_job(s, sub, "static", deadline_s=60)
        sid = sub.id
    assert run_audit(sid, settings) == "input_error"
    state, transitions, jobs = _state(settings, sid)
    assert state == "failed" and transitions[-1] == ("failed", "input_error")
    assert jobs == [("failed", 1, "not_a_records_folder")]
    with session_scope(settings.database_url) as s:
        assert repo.get_submission(s, sid).error_code == "not_a_records_folder"


def test_infrastructure_errors_are_never_the_submitters(settings, record_folders) -> None:
    """The stored folder vanished (disk/volume fault): InfraError → error_infra (not failed), the
    job goes back to the queue, and once the store is repaired the retry completes."""
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        key = repo.get_submission(s, sid).folder_key
    root = BlobStore(settings.blob_dir).path(key)
    hidden = root.with_name(root.name + ".moved")
    root.rename(hidden)
    with pytest.raises(InfraError) as err:
        run_audit(sid, settings)
    assert err.value.code == "blob_missing"
    _record_infra_error(settings, sid, err.value, final=False)
    state, transitions, jobs = _state(settings, sid)
    assert state == "error_infra" and transitions[-1] == ("error_infra", "blob_missing")
    assert jobs == [("queued", 1, "blob_missing")]
    with session_scope(settings.database_url) as s:
        assert "not counted against the submission" in repo.get_submission(s, sid).error_message
    hidden.rename(root)
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    _, transitions, jobs = _state(settings, sid)
    assert ("validating", "audit_restarted") in transitions and jobs[0][:2] == ("done", 2)


def test_internal_errors_are_infra_not_failures(settings, record_folders) -> None:
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        job = repo.latest_job(s, sid, "static")
        repo.claim_job(s, job.id, worker="w", stale_after_s=60)
        repo.transition(s, sub, "validating", "audit_started")
    _record_internal_error(settings, sid, ZeroDivisionError("bug"))
    state, transitions, jobs = _state(settings, sid)
    assert state == "error_infra" and transitions[-1] == ("error_infra", "internal_error")
    assert jobs == [("failed", 1, "internal_error")]


def test_sweeper_fails_jobs_past_deadline_as_infra(settings, record_folders) -> None:
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        job = repo.latest_job(s, sid, "static")
        repo.claim_job(s, job.id, worker="w", stale_after_s=60)
        repo.transition(s, sub, "validating", "audit_started")
        job.deadline = utcnow() - timedelta(seconds=1)
        job_id = job.id
    report = sweep(settings)
    assert report.deadline_exceeded == [job_id]
    state, transitions, jobs = _state(settings, sid)
    assert state == "error_infra" and transitions[-1] == ("error_infra", "deadline_exceeded")
    assert jobs[0][0] == "failed" and jobs[0][2] == "deadline_exceeded"
    assert sweep(settings).deadline_exceeded == []      # nothing is swept twice


def test_sweeper_requeues_stale_and_unpublished_jobs(tmp_path, record_folders) -> None:
    from tests.service.conftest import make_settings
    from store.db import migrate

    # a broker that cannot be reached: publishing fails, the job stays recorded
    dead = make_settings(tmp_path / "h", broker_url="redis://127.0.0.1:1/0",
                         broker_connect_timeout_s=0.5, enqueue_retries=0)
    dead.ensure_dirs()
    migrate(dead.database_url)
    sid = _submit(dead, record_folders[0])
    with session_scope(dead.database_url) as s:
        job = repo.latest_job(s, sid, "static")
        assert job.state == "queued" and job.published_at is None and job.celery_task_id is None
        job_id = job.id
    assert sweep(dead).publish_failed == [job_id]
    # the broker is back (the embedded one): the sweeper publishes the job
    alive = make_settings(tmp_path / "h")
    report = sweep(alive)
    assert report.republished == [job_id]
    with session_scope(alive.database_url) as s:
        assert repo.latest_job(s, sid, "static").celery_task_id
    # a running job whose worker stopped beating goes back to the queue and is published
    with session_scope(alive.database_url) as s:
        repo.claim_job(s, job_id, worker="dead", stale_after_s=60)
        s.execute(update(AuditJob).where(AuditJob.id == job_id)
                  .values(heartbeat_at=utcnow() - timedelta(hours=1)))
    report = sweep(alive)
    assert report.requeued_stale == [job_id]
    with session_scope(alive.database_url) as s:
        job = s.get(AuditJob, job_id)
        assert job.state == "queued" and job.error_code == "worker_lost" and job.published_at


def test_reproduction_hooks_walk_queued_running_judging(settings, record_folders, monkeypatch) -> None:
    """With seeds requested: static verdict → `queued` (a reproduce job, one run per seed, one
    message per seed on the GPU queue) → `running` when a seed starts → judged again with the
    runs as evidence. Here the worker has no data folder, so the run itself is an infrastructure
    error recorded on the run — never a failure of the submission's code."""
    from worker.tasks import run_judge, run_reproduce_seed

    monkeypatch.delenv("PGOLF_DATA_DIR", raising=False)
    monkeypatch.setattr("worker.tasks.get_settings", lambda: settings)
    monkeypatch.setattr("worker.reproduce._settings", lambda: settings, raising=False)
    # the runner publishes the judging through worker.app.celery_app: this test's broker
    from worker.app import sender_for
    monkeypatch.setattr("worker.app.celery_app", sender_for(settings))
    sid = _submit(settings, record_folders[0])
    with session_scope(settings.database_url) as s:
        repo.get_submission(s, sid).reproduce = {"seeds": [1, 2], "nproc": 1}
    assert run_audit(sid, settings) == "reproduction_queued"
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        assert sub.state == "queued" and repo.get_verdict(s, sid).basis == "static"
        job = repo.latest_job(s, sid, "reproduce")
        assert job.params == {"seeds": [1, 2], "nproc": 1} and job.celery_task_id
        assert sorted(r.seed for r in sub.runs) == [1, 2]
        job_id = job.id
    for seed in (1, 2):
        run_reproduce_seed(sid, seed, 1, job_id)
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        assert "running" in [t.to_state for t in sub.transitions]
        assert all(r.status == "infra_error" and r.error for r in sub.runs)
        # the first judging attempt hit an infrastructure fault; its retry must still judge
        repo.transition(s, sub, "error_infra", "database_unavailable", "db down")
    assert run_judge(sid, settings) in ("passed", "failed", "needs_review")
    with session_scope(settings.database_url) as s:
        v = repo.get_verdict(s, sid)
        assert v.basis == "reproduced" and v.version == 2 and len(v.body["runs"]) == 2
        states = [t.to_state for t in repo.get_submission(s, sid).transitions]
        assert states[-3:-1] == ["judging", "reported"]


def test_cancel_during_an_audit_writes_nothing(tmp_path, record_folders) -> None:
    """An admin cancels while the worker is mid-audit: the worker notices at its next step and
    stores no verdict; the submission stays cancelled."""
    import threading

    from tests.service.conftest import make_settings
    from store.db import migrate

    settings = make_settings(tmp_path / "h", fault_injection_pause_s=1.0)
    settings.ensure_dirs()
    migrate(settings.database_url)
    sid = _submit(settings, record_folders[0])
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(run_audit(sid, settings)))
    t.start()
    from tests.service.conftest import wait_for
    wait_for(lambda: _state(settings, sid)[0] == "validating", 10, "the audit to start")
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        repo.cancel_jobs(s, sid)
        repo.transition(s, sub, "cancelled", "admin_cancel")
    t.join(20)
    assert result == ["superseded"]
    state, _, jobs = _state(settings, sid)
    assert state == "cancelled" and jobs[0][0] == "cancelled"
    with session_scope(settings.database_url) as s:
        assert repo.get_verdict(s, sid) is None


def test_worker_cli_arguments(monkeypatch, tmp_path) -> None:
    import argparse

    from store.settings import get_settings
    from worker.cli import build_argv

    monkeypatch.setenv("PGOLF_AUDIT_HOME", str(tmp_path))
    monkeypatch.setenv("PGOLF_AUDIT_QUEUE_GPU", "gpu-x")
    get_settings.cache_clear()
    try:
        ns = argparse.Namespace(queues="gpu", concurrency=4, pool="prefork", beat=False,
                                loglevel="info", hostname="n1")
        argv = build_argv(ns)
        assert "--queues=gpu-x" in argv and "--concurrency=1" in argv   # one GPU job at a time
        ns = argparse.Namespace(queues="audit,gpu", concurrency=0, pool="solo", beat=True,
                                loglevel="info", hostname=None)
        argv = build_argv(ns)
        assert "--queues=audit,gpu-x" in argv and "--beat" in argv
        assert not any(a.startswith("--concurrency") for a in argv)
        with pytest.raises(SystemExit):
            build_argv(argparse.Namespace(queues="cpu", concurrency=0, pool="solo", beat=False,
                                          loglevel="info", hostname=None))
    finally:
        get_settings.cache_clear()


def test_celery_app_is_configured_for_long_jobs() -> None:
    from store.settings import Settings
    from worker.app import TASK_AUDIT, TASK_REPRODUCE, make_celery

    app = make_celery(Settings(broker_url="redis://127.0.0.1:6379/0", queue_gpu="g", queue_audit="a"))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > Settings().reproduce_deadline_s
    assert conf.task_routes[TASK_REPRODUCE] == {"queue": "g"}
    assert app.amqp.router.route({}, TASK_AUDIT)["queue"].name == "a"
    assert conf.beat_schedule["sweep-stuck-jobs"]["task"] == "pgolf.sweep"
