"""End to end through real processes: the API (in-process ASGI app) → Redis → a Celery worker
subprocess → the store (PostgreSQL) → verdict and report over HTTP. No eager mode, no mocks."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from store import repo
from store.db import migrate, session_scope
from tests.service.conftest import (
    make_settings, purge_redis, unique_queues, variant_zip, wait_for, zip_folder,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, start_worker):
    settings = make_settings(tmp_path / "home", database_url=pg_url, broker_url=redis_url,
                             **unique_queues())
    settings.ensure_dirs()
    migrate(settings.database_url)
    worker = start_worker(settings, queues="audit", pool="prefork", concurrency=2)
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url) as s:
            _, tok = repo.create_token(s, "ci", "submit")
        yield settings, client, {"Authorization": f"Bearer {tok}"}, worker
    purge_redis(redis_url, settings.queue_audit, settings.queue_gpu)


def test_upload_to_verdict_and_report(stack, record_folders) -> None:
    settings, client, auth, worker = stack
    ids = []
    for i, folder in enumerate(record_folders[:3]):
        r = client.post("/v1/submissions", headers=auth,
                        files={"file": (f"{folder.name}.zip", zip_folder(folder))})
        assert r.status_code == 202 and r.json()["queued"], r.text
        ids.append(r.json()["id"])

    def verdicts():
        out = [client.get(f"/v1/submissions/{i}/verdict") for i in ids]
        return out if all(r.status_code == 200 for r in out) else None

    got = wait_for(verdicts, 60, "all verdicts", interval=0.25, diagnose=worker.tail)
    for sid, r, folder in zip(ids, got, record_folders[:3]):
        body = r.json()
        assert body["schema"] == "pgolf-audit/verdict/1"
        sub = client.get(f"/v1/submissions/{sid}").json()
        assert sub["state"] in ("passed", "failed", "needs_review") and sub["name"] == folder.name
        assert sub["jobs"][0]["attempts"] == 1
        page = client.get(f"/v1/submissions/{sid}/report")
        assert page.status_code == 200 and "<html" in page.text.lower()
    metrics = client.get("/metrics").text
    assert "pgolf_audit_audit_duration_seconds_count 3.0" in metrics
    assert f'pgolf_audit_broker_queue_depth{{queue="{settings.queue_audit}"}} 0.0' in metrics
    assert client.get("/healthz").json()["checks"] == {"database": "ok", "broker": "ok"}


def test_same_upload_many_times_is_audited_once(stack, record_folders) -> None:
    settings, client, auth, worker = stack
    data = variant_zip(record_folders[0], "dup")
    ids = {client.post("/v1/submissions", headers=auth, files={"file": ("a.zip", data)}).json()["id"]
           for _ in range(5)}
    assert len(ids) == 1
    sid = ids.pop()
    wait_for(lambda: client.get(f"/v1/submissions/{sid}/verdict").status_code == 200, 60,
             "the verdict", diagnose=worker.tail)
    sub = client.get(f"/v1/submissions/{sid}").json()
    assert len(sub["jobs"]) == 1 and sub["jobs"][0]["attempts"] == 1
