"""Faults with real processes: a worker killed with SIGKILL mid-audit, and the broker (a Redis
server of this test's own) killed and restarted. Nothing is lost, nothing is duplicated, stored
verdicts stay readable, and infrastructure faults are never recorded against the submitter."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from store import repo
from store.db import migrate, session_scope
from store.models import AuditJob
from tests.service.conftest import (
    free_port, make_settings, purge_redis, redis_reachable, unique_queues, variant_zip, wait_for,
)
from worker.sweeper import sweep

pytestmark = pytest.mark.integration
TERMINAL = ("passed", "failed", "needs_review")


def _post(client, auth, data: bytes) -> dict:
    r = client.post("/v1/submissions", headers=auth, files={"file": ("s.zip", data)})
    assert r.status_code == 202, r.text
    return r.json()


def _token(settings) -> dict:
    with session_scope(settings.database_url) as s:
        _, tok = repo.create_token(s, "ci", "admin")
    return {"Authorization": f"Bearer {tok}"}


def test_worker_killed_mid_audit_loses_nothing(tmp_path, redis_url, start_worker,
                                               record_folders) -> None:
    settings = make_settings(tmp_path / "home", broker_url=redis_url, job_stale_after_s=1,
                             fault_injection_pause_s=2.0, **unique_queues())
    settings.ensure_dirs()
    migrate(settings.database_url)
    worker = start_worker(settings, queues="audit", pool="solo")
    try:
        with TestClient(create_app(settings)) as client:
            auth = _token(settings)
            ids = [_post(client, auth, variant_zip(record_folders[0], f"k{i}"))["id"] for i in range(3)]

            def running_job():
                with session_scope(settings.database_url) as s:
                    for sid in ids:
                        job = repo.latest_job(s, sid, "static")
                        if job.state == "running":
                            return sid
                return None

            victim = wait_for(running_job, 30, "an audit to start", diagnose=worker.tail)
            worker.kill9()
            with session_scope(settings.database_url) as s:
                assert repo.get_submission(s, victim).state == "validating"
                assert repo.latest_job(s, victim, "static").state == "running"
            time.sleep(settings.job_stale_after_s + 0.5)   # its heartbeat goes stale
            report = sweep(settings)                        # what beat runs every minute
            assert report.requeued_stale, report
            worker2 = start_worker(settings, queues="audit", pool="solo")

            def all_done():
                subs = [client.get(f"/v1/submissions/{i}").json() for i in ids]
                return subs if all(s["state"] in TERMINAL for s in subs) else None

            subs = wait_for(all_done, 60, "all audits to finish", interval=0.3,
                            diagnose=worker2.tail)
            for sub in subs:
                assert client.get(f"/v1/submissions/{sub['id']}/verdict").status_code == 200
                assert len(sub["jobs"]) == 1 and sub["jobs"][0]["state"] == "done"
            killed = next(s for s in subs if s["id"] == victim)
            assert killed["jobs"][0]["attempts"] == 2
            assert "audit_restarted" in [t["reason"] for t in killed["transitions"]]
            # no infrastructure fault is left on the submitter's record
            assert all(s["error"] is None for s in subs)
    finally:
        purge_redis(redis_url, settings.queue_audit, settings.queue_gpu)


class OwnRedis:
    """A redis-server of this test's own on a spare port (the machine's one is left alone)."""

    def __init__(self, tmp) -> None:
        self.port, self.dir, self.proc = free_port(), tmp, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: redis_reachable(self.port), 10, "redis-server to start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.kill()


def test_broker_restart_keeps_verdicts_and_resumes_work(tmp_path, own_redis, start_worker,
                                                        record_folders) -> None:
    settings = make_settings(tmp_path / "home", broker_url=f"redis://127.0.0.1:{own_redis.port}/0",
                             broker_connect_timeout_s=1.0, enqueue_retries=0)
    settings.ensure_dirs()
    migrate(settings.database_url)
    worker = start_worker(settings, queues="audit", pool="solo")
    with TestClient(create_app(settings)) as client:
        auth = _token(settings)
        a = _post(client, auth, variant_zip(record_folders[0], "a"))["id"]
        wait_for(lambda: client.get(f"/v1/submissions/{a}/verdict").status_code == 200, 60,
                 "verdict A", diagnose=worker.tail)
        verdict_a = client.get(f"/v1/submissions/{a}/verdict").json()

        own_redis.kill()
        # stored verdicts are served from the store, whatever the broker does
        r = client.get(f"/v1/submissions/{a}/verdict")
        assert r.status_code == 200 and r.json() == verdict_a
        assert client.get(f"/v1/submissions/{a}/report").status_code == 200
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["code"] == "unhealthy"
        assert health.json()["checks"]["broker"].startswith("error")
        # a submission made while the broker is down is kept, not lost, not refused
        b = _post(client, auth, variant_zip(record_folders[0], "b"))
        assert b["queued"] is False
        with session_scope(settings.database_url) as s:
            job = repo.latest_job(s, b["id"], "static")
            assert job.state == "queued" and job.published_at is None

        own_redis.start()            # empty: whatever was queued in Redis is gone
        wait_for(lambda: not sweep(settings).publish_failed, 20, "the sweeper to publish")
        wait_for(lambda: client.get(f"/v1/submissions/{b['id']}/verdict").status_code == 200, 60,
                 "verdict B after the restart", interval=0.3, diagnose=worker.tail)
        assert client.get("/healthz").status_code == 200
        with session_scope(settings.database_url) as s:
            assert s.get(AuditJob, job.id).state == "done"
            assert repo.get_submission(s, b["id"]).error_code is None


def test_beat_sweeper_publishes_work_the_broker_never_got(tmp_path, redis_url, start_worker,
                                                          record_folders) -> None:
    """A job recorded while the broker was down (never published) is picked up by the worker's
    own beat schedule — no operator, no manual sweep."""
    from store.blobs import BlobStore
    from worker.intake import store_folder

    settings = make_settings(tmp_path / "home", broker_url=redis_url, sweeper_interval_s=1.0,
                             **unique_queues())
    settings.ensure_dirs()
    migrate(settings.database_url)
    stored = store_folder(BlobStore(settings.blob_dir), record_folders[0])
    with session_scope(settings.database_url) as s:
        sub, _ = repo.create_or_get_submission(s, sha256=stored.sha256, source_kind="upload",
                                               folder_key=stored.folder_key, name=stored.name)
        repo.create_job(s, sub, "static", deadline_s=600)      # recorded, never published
        sid = sub.id
    worker = start_worker(settings, queues="audit", pool="solo", beat=True)
    try:
        def finished():
            with session_scope(settings.database_url) as s:
                return repo.get_submission(s, sid).state in TERMINAL
        wait_for(finished, 60, "the beat sweeper to get the job audited", interval=0.3,
                 diagnose=worker.tail)
        with session_scope(settings.database_url) as s:
            job = repo.latest_job(s, sid, "static")
            assert job.state == "done" and job.attempts == 1 and job.celery_task_id
    finally:
        purge_redis(redis_url, settings.queue_audit, settings.queue_gpu)
