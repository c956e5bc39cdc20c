"""/healthz and /metrics."""
from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from tests.service.conftest import make_settings, zip_folder
from worker.tasks import run_audit


def test_healthz_ok_on_embedded_defaults(tmp_path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "h"))) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_healthz_reports_an_unreachable_broker(tmp_path) -> None:
    settings = make_settings(tmp_path / "h", broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
        assert r.status_code == 503
        body = r.json()
        assert body["code"] == "unhealthy" and "broker" in body["message"]
        assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")


def test_healthz_reports_an_unreachable_database(tmp_path) -> None:
    settings = make_settings(tmp_path / "h", auto_migrate=False,
                             database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")


def test_metrics(tmp_path, record_folders) -> None:
    settings = make_settings(tmp_path / "h", submit_requires_token=False)
    with TestClient(create_app(settings)) as client:
        sid = client.post("/v1/submissions",
                          files={"file": ("a.zip", zip_folder(record_folders[0]))}).json()["id"]
        text = client.get("/metrics").text
        assert 'pgolf_audit_submissions{state="received"} 1.0' in text
        assert 'pgolf_audit_jobs_queued{kind="static"} 1.0' in text
        assert "pgolf_audit_audit_duration_seconds_count 0.0" in text
        run_audit(sid, settings)
        client.get(f"/v1/submissions/{sid}/verdict")
        text = client.get("/metrics").text
        assert 'pgolf_audit_submissions{state="received"} 0.0' in text
        assert "pgolf_audit_audit_duration_seconds_count 1.0" in text
        assert 'pgolf_audit_jobs_queued{kind="static"} 0.0' in text
        # latency is labelled by route template, not by raw path (bounded label values)
        assert ('pgolf_audit_http_request_duration_seconds_count{method="GET",'
                'route="/v1/submissions/{submission_id}/verdict",status="200"} 1.0') in text
        assert sid not in text
