"""/v1/submissions: intake (uploads and GitHub sources), refusals with codes (nothing stored),
idempotency, auth, verdict/report/log reads, admin re-run and cancel. The audit itself runs
through the worker's own function (`worker.tasks.run_audit`); the worker process paths are in
test_worker_celery.py."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from store import repo
from store.blobs import BlobStore
from store.db import session_scope
from store.models import AuditJob, Submission
from tests.service.conftest import make_settings, tgz_folder, variant_zip, zip_folder, zip_members
from worker.tasks import run_audit


@pytest.fixture
def env(tmp_path: Path):
    settings = make_settings(tmp_path / "home", max_upload_bytes=2_000_000)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        with session_scope(settings.database_url) as s:
            _, admin = repo.create_token(s, "admin", "admin")
            _, submit = repo.create_token(s, "ci", "submit")
        yield settings, client, {"Authorization": f"Bearer {submit}"}, {"Authorization": f"Bearer {admin}"}


def _post(client, headers, data: bytes, name: str = "sub.zip", **form):
    return client.post("/v1/submissions", headers=headers, files={"file": (name, data)}, data=form)


def _count(settings, model=Submission) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(model))


def _stored_objects(settings) -> list[str]:
    root = Path(settings.blob_dir)
    return [p for sub in ("objects", "trees") for p in os.listdir(root / sub)] \
        if (root / "objects").exists() else []


def test_upload_is_accepted_and_identified_by_content(env, record_folders) -> None:
    settings, client, submit, _ = env
    folder = record_folders[0]
    r = _post(client, submit, zip_folder(folder))
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/submissions/{body['id']}"
    assert body["duplicate"] is False and body["queued"] is True and body["state"] == "received"
    # same content again (as tar.gz this time): the same submission, nothing new queued
    r2 = client.post("/v1/submissions", headers=submit,
                     files={"file": ("again.tar.gz", tgz_folder(folder))})
    assert r2.status_code == 202 and r2.json()["id"] == body["id"] and r2.json()["duplicate"]
    assert _count(settings) == 1 and _count(settings, AuditJob) == 1
    listed = client.get("/v1/submissions").json()["submissions"]
    assert [x["id"] for x in listed] == [body["id"]]
    assert client.get("/v1/submissions?state=passed").json()["submissions"] == []
    got = client.get(f"/v1/submissions/{body['id']}").json()
    assert got["name"] == folder.name and got["source"]["kind"] == "upload"
    assert got["jobs"][0]["state"] == "queued" and got["transitions"][0]["to"] == "received"


def test_different_content_is_a_different_submission(env, record_folders) -> None:
    settings, client, submit, _ = env
    a = _post(client, submit, variant_zip(record_folders[0], "a")).json()["id"]
    b = _post(client, submit, variant_zip(record_folders[0], "b")).json()["id"]
    assert a != b and _count(settings) == 2


def _bomb() -> bytes:
    return zip_members({"x/README.md": b"# x\n", "x/big.log": b"\0" * 30_000_000})


@pytest.mark.parametrize("case,status,code", [
    ("corrupt", 400, "unsupported_archive"),
    ("truncated", 400, "bad_archive"),
    ("escaping", 400, "unsafe_path"),
    ("absolute", 400, "unsafe_path"),
    ("not_records", 400, "not_a_records_folder"),
    ("bomb", 413, "zip_bomb"),
])
def test_bad_uploads_are_refused_with_a_code_and_nothing_stored(env, record_folders, case,
                                                                 status, code) -> None:
    settings, client, submit, _ = env
    good = zip_folder(record_folders[0])
    data = {
        "corrupt": b"this is not an archive at all" * 10,
        "truncated": good[: len(good) // 2],
        "escaping": zip_members({"x/README.md": b"# x\n", "x/../../evil.py": b"print(1)\n"}),
        "absolute": _tar({"/etc/evil.log": b"x"}),
        "not_records": zip_members({"x/data.bin": b"\x01\x02" * 100}),
        "bomb": _bomb(),
    }[case]
    before = _stored_objects(settings)
    r = _post(client, submit, data)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert set(r.json()) == {"code", "message"} and "Traceback" not in r.text
    assert _count(settings) == 0 and _stored_objects(settings) == before


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_too_large_upload_is_refused(env) -> None:
    settings, client, submit, _ = env
    big = os.urandom(settings.max_upload_bytes + 1)
    r = _post(client, submit, big)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert _count(settings) == 0


def test_request_shape_errors(env) -> None:
    _, client, submit, _ = env
    r = client.post("/v1/submissions", headers=submit, data={"policy": "x"},
                    files={"other": ("a", b"b")})
    assert r.status_code == 422 and r.json()["code"] == "missing_file"
    r = client.post("/v1/submissions", headers={**submit, "content-type": "text/plain"}, content=b"x")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = client.post("/v1/submissions", headers=submit, json={"repo": "o/r", "bogus": 1})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    r = client.post("/v1/submissions", headers=submit, json={"repo": "o/r"})
    assert r.status_code == 400 and r.json()["code"] == "bad_source"
    r = client.post("/v1/submissions", headers=submit, json={"repo": "../etc", "pr": 1})
    assert r.status_code == 400 and r.json()["code"] == "bad_repo"
    r = client.post("/v1/submissions", headers=submit, json={"repo": "o/r", "pr": 1, "policy": "nope"})
    assert r.status_code == 400 and r.json()["code"] == "unknown_policy"


def test_github_source_is_recorded_for_the_worker(env) -> None:
    settings, client, submit, admin = env
    r = client.post("/v1/submissions", headers=submit,
                    json={"repo": "openai/parameter-golf", "pr": 1060, "head_sha": "a" * 40})
    assert r.status_code == 202
    again = client.post("/v1/submissions", headers=submit,
                        json={"repo": "openai/parameter-golf", "pr": 1060, "head_sha": "a" * 40})
    assert again.json()["id"] == r.json()["id"] and again.json()["duplicate"]
    got = client.get(f"/v1/submissions/{r.json()['id']}").json()
    assert got["source"] == {"kind": "github", "repo": "openai/parameter-golf", "pr": 1060,
                             "ref": None, "path": None, "head_sha": "a" * 40}
    # reproduction is an admin's call
    r = client.post("/v1/submissions", headers=submit, json={"repo": "o/r", "pr": 2, "seeds": [1]})
    assert r.status_code == 403 and r.json()["code"] == "reproduce_not_allowed"
    r = client.post("/v1/submissions", headers=admin,
                    json={"repo": "o/r", "ref": "main", "path": "records/x/y", "seeds": [1, 2]})
    assert r.status_code == 202
    assert client.get(f"/v1/submissions/{r.json()['id']}").json()["reproduce"] == {"seeds": [1, 2], "nproc": 1}


def test_auth(env, record_folders) -> None:
    settings, client, submit, admin = env
    data = zip_folder(record_folders[0])
    r = _post(client, {}, data)
    assert r.status_code == 401 and r.json()["code"] == "token_required"
    assert r.headers["www-authenticate"] == "Bearer"
    r = _post(client, {"Authorization": "Bearer pga_wrong"}, data)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    sid = _post(client, submit, data).json()["id"]
    r = client.post(f"/v1/submissions/{sid}/cancel", headers=submit)
    assert r.status_code == 403 and r.json()["code"] == "admin_required"
    r = client.post(f"/v1/submissions/{sid}/cancel")
    assert r.status_code == 401
    # reads are public by default
    assert client.get(f"/v1/submissions/{sid}").status_code == 200


def test_private_reports(tmp_path, record_folders) -> None:
    settings = make_settings(tmp_path / "home", reports_public=False, submit_requires_token=False)
    with TestClient(create_app(settings)) as client:
        sid = _post(client, {}, zip_folder(record_folders[0])).json()["id"]
        r = client.get(f"/v1/submissions/{sid}")
        assert r.status_code == 401 and r.json()["code"] == "token_required"
        with session_scope(settings.database_url) as s:
            _, tok = repo.create_token(s, "reader", "submit")
        assert client.get(f"/v1/submissions/{sid}",
                          headers={"Authorization": f"Bearer {tok}"}).status_code == 200


def test_verdict_report_and_caching(env, record_folders) -> None:
    settings, client, submit, admin = env
    sid = _post(client, submit, zip_folder(record_folders[0])).json()["id"]
    r = client.get(f"/v1/submissions/{sid}/verdict")
    assert r.status_code == 409 and r.json()["code"] == "verdict_not_ready"
    page = client.get(f"/v1/submissions/{sid}/report")
    assert page.status_code == 200 and "received" in page.text
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    r = client.get(f"/v1/submissions/{sid}/verdict")
    assert r.status_code == 200, r.text
    verdict = r.json()
    assert verdict["schema"] == "pgolf-audit/verdict/1" and verdict["rules"]
    sub = client.get(f"/v1/submissions/{sid}").json()
    assert sub["outcome"] == verdict["outcome"]
    assert sub["state"] == {"pass": "passed", "fail": "failed", "needs_review": "needs_review"}[verdict["outcome"]]
    assert sub["error"] is None    # a failing verdict is not an error
    etag = r.headers["etag"]
    assert client.get(f"/v1/submissions/{sid}/verdict", headers={"If-None-Match": etag}).status_code == 304
    html = client.get(f"/v1/submissions/{sid}/report")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text.lower() and "Traceback" not in html.text


def test_run_logs_stream(env, record_folders) -> None:
    settings, client, submit, _ = env
    sid = _post(client, submit, zip_folder(record_folders[0])).json()["id"]
    blobs = BlobStore(settings.blob_dir)
    key = blobs.log_key(sid, "seed-7")
    blobs.append_lines(key, ["step:1 loss 9.0", "step:2 loss 8.0"])
    with session_scope(settings.database_url) as s:
        run = repo.create_run(s, repo.get_submission(s, sid), seed=7, log_key=key)
        run_id = run.id
    r = client.get(f"/v1/submissions/{sid}/runs/{run_id}/log")
    assert r.status_code == 200 and r.text == "step:1 loss 9.0\nstep:2 loss 8.0\n"
    assert r.headers["x-log-size"] == str(len(r.content))
    assert client.get(f"/v1/submissions/{sid}/runs/seed-7/log?offset=16").text == "step:2 loss 8.0\n"
    r = client.get(f"/v1/submissions/{sid}/runs/999/log")
    assert r.status_code == 404 and r.json()["code"] == "run_not_found"


def test_admin_rerun_and_cancel(env, record_folders) -> None:
    settings, client, submit, admin = env
    sid = _post(client, submit, zip_folder(record_folders[0])).json()["id"]
    r = client.post(f"/v1/submissions/{sid}/rerun", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "in_progress"
    r = client.post(f"/v1/submissions/{sid}/cancel", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["cancelled_jobs"]
    # a redelivered message for the cancelled audit does nothing
    assert run_audit(sid, settings) == "already_cancelled"
    assert client.post(f"/v1/submissions/{sid}/cancel", headers=admin).json()["code"] == "already_finished"
    r = client.post(f"/v1/submissions/{sid}/rerun", headers=admin)
    assert r.status_code == 202 and r.json()["state"] == "received"
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    got = client.get(f"/v1/submissions/{sid}").json()
    reasons = [t["reason"] for t in got["transitions"]]
    assert "admin_cancel" in reasons and "admin_rerun" in reasons
    assert [j["state"] for j in got["jobs"]] == ["cancelled", "done"]


def test_problem_bodies_for_framework_errors(env) -> None:
    _, client, _, _ = env
    r = client.get("/v1/submissions/doesnotexist")
    assert r.status_code == 404 and r.json()["code"] == "submission_not_found"
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"code": "not_found", "message": r.json()["message"]}
    r = client.put("/v1/submissions")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = client.get("/v1/submissions?limit=abc")
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert client.get("/docs").status_code == 200
    assert "/v1/submissions" in client.get("/openapi.json").json()["paths"]


def test_internal_errors_never_leak_a_traceback(env) -> None:
    _, client, _, _ = env

    def boom() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    client.app.add_api_route("/boom", boom)
    r = client.get("/boom")
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_verdict_cache_fast_path_and_refresh(tmp_path, record_folders) -> None:
    """Cached public verdicts are served without touching the store; an admin re-run evicts;
    an expired entry is refreshed from the store by one request while others get the old one."""
    import time as _time

    settings = make_settings(tmp_path / "home", verdict_cache_ttl_s=0.3, submit_requires_token=False)
    with TestClient(create_app(settings)) as client:
        sid = _post(client, {}, zip_folder(record_folders[0])).json()["id"]
        run_audit(sid, settings)
        first = client.get(f"/v1/submissions/{sid}/verdict")
        assert first.status_code == 200
        # change the stored verdict behind the API's back: the cache still answers ...
        with session_scope(settings.database_url) as s:
            repo.save_verdict(s, repo.get_submission(s, sid), {**first.json(), "outcome": "needs_review"})
        cached = client.get(f"/v1/submissions/{sid}/verdict")
        assert cached.json()["outcome"] == first.json()["outcome"]
        assert cached.headers["etag"] == first.headers["etag"]
        # ... with a token the store is read
        with session_scope(settings.database_url) as s:
            _, tok = repo.create_token(s, "r", "submit")
        fresh = client.get(f"/v1/submissions/{sid}/verdict", headers={"Authorization": f"Bearer {tok}"})
        assert fresh.json()["outcome"] == "needs_review" and fresh.headers["etag"] != first.headers["etag"]
        # after the TTL, one request refreshes and the new verdict is served from the cache
        with session_scope(settings.database_url) as s:
            repo.save_verdict(s, repo.get_submission(s, sid), {**first.json(), "outcome": "pass"})
        _time.sleep(0.35)
        seen = {client.get(f"/v1/submissions/{sid}/verdict").json()["outcome"] for _ in range(3)}
        assert "pass" in seen
        assert client.get(f"/v1/submissions/{sid}/verdict").json()["outcome"] == "pass"


def test_resubmitting_after_an_infrastructure_error_retries(env, record_folders) -> None:
    settings, client, submit, _ = env
    data = zip_folder(record_folders[0])
    sid = _post(client, submit, data).json()["id"]
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        job = repo.latest_job(s, sid, "static")
        repo.finish_job(s, job, "failed", error_code="database_unavailable", error="db down")
        repo.transition(s, sub, "error_infra", "database_unavailable", "db down")
    again = _post(client, submit, data).json()
    assert again["id"] == sid and again["state"] == "received" and again["queued"]
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    got = client.get(f"/v1/submissions/{sid}").json()
    assert got["error"] is None and "resubmitted" in [t["reason"] for t in got["transitions"]]


def test_webhook_delivery_queues_the_audit_in_this_apps_store(tmp_path) -> None:
    """The GitHub webhook route (api/routes/webhooks.py) mounted by create_app records the PR
    submission and publishes its audit with this app's settings, not the process-wide ones."""
    import hashlib
    import hmac
    import json

    import pytest as _pytest
    _pytest.importorskip("api.routes.webhooks")
    settings = make_settings(tmp_path / "home", github_webhook_secret="s3cret")
    payload = json.dumps({
        "action": "opened", "number": 12,
        "repository": {"full_name": "openai/parameter-golf"},
        "pull_request": {"number": 12, "title": "Record", "head": {
            "sha": "f" * 40, "repo": {"full_name": "someone/parameter-golf"}}}}).encode()
    sig = "sha256=" + hmac.new(b"s3cret", payload, hashlib.sha256).hexdigest()
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/webhooks/github", content=payload, headers={
            "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": sig, "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        sid = r.json()["submission_id"]
        got = client.get(f"/v1/submissions/{sid}").json()
        assert got["source"]["kind"] == "github" and got["source"]["head_sha"] == "f" * 40
    with session_scope(settings.database_url) as s:
        job = repo.latest_job(s, sid, "static")
        assert job is not None and job.published_at is not None and job.celery_task_id
