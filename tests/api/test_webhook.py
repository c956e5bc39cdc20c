"""GitHub integration: the webhook route (signature, de-duplication, events), the REST client
against a local fake GitHub (files, contents, statuses, sticky comments, retries, limits), and
the notification of a verdict back to the PR."""
from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.routes import webhooks
from fake_github import BOT, TOKEN, FakeGitHub, FakeGitHubServer, records_pr
from rules.archive import Limits
from rules.errors import InputError
from worker.github import (STICKY_MARKER, GitHubClient, GitHubError, fetch_pr_folder,
                           find_records_folder)
from worker.notify import commit_state, notify_github, summary_markdown

SECRET = "whsec-test-0123456789"
SHA1, SHA2 = "1" * 40, "2" * 40


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture()
def db_url(tmp_path):
    from store.db import dispose_engines, migrate

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)            # the real schema, as the service creates it
    yield url
    dispose_engines()


class RecordingIntake(webhooks.StoreIntake):
    """The real store intake; the queue is replaced by a list (no broker in unit tests)."""

    def __init__(self, url):
        super().__init__(url)
        self.enqueued: list[str] = []
        self.fail_enqueue = False

    def _enqueue(self, submission_id):
        if self.fail_enqueue:
            raise RuntimeError("broker down")
        self.enqueued.append(submission_id)
        self._mark_submission(submission_id)


@pytest.fixture()
def hook(db_url):
    intake = RecordingIntake(db_url)
    app = FastAPI()
    app.include_router(webhooks.router)
    app.dependency_overrides[webhooks.webhook_secret] = lambda: SECRET
    app.dependency_overrides[webhooks.webhook_intake] = lambda: intake
    return TestClient(app), intake, db_url


@pytest.fixture()
def github():
    state = FakeGitHub()
    with FakeGitHubServer(state) as server:
        client = GitHubClient(server.url, TOKEN, sleep=lambda s: state.requests.append(("SLEEP", str(s))),
                              timeout_s=5)
        yield state, server, client
        client.close()


def pr_payload(action="opened", number=1900, sha=SHA1, repo="openai/parameter-golf"):
    return {"action": action, "number": number,
            "pull_request": {"number": number, "title": "Record: 1.0601",
                             "head": {"sha": sha, "repo": {"full_name": "someone/parameter-golf"}}},
            "repository": {"full_name": repo}}


def post(client, payload, *, event="pull_request", delivery="d-1", secret=SECRET, raw=None, sig=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
    if sig is None and secret is not None:
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if sig:
        headers["X-Hub-Signature-256"] = sig
    return client.post("/v1/webhooks/github", content=body, headers=headers)


def rows(db_url):
    from sqlalchemy import select

    from store.db import session_scope
    from store.models import Submission, WebhookDelivery
    with session_scope(db_url) as s:
        subs = [(x.id, x.source_kind, x.repo, x.pr, x.head_sha) for x in s.execute(select(Submission)).scalars()]
        dels = [(x.delivery_id, x.status, x.submission_id) for x in s.execute(select(WebhookDelivery)).scalars()]
    return subs, dels


# ------------------------------------------------------------------------------- the route

def test_signed_pr_opened_creates_one_github_submission_and_enqueues(hook):
    client, intake, db = hook
    r = post(client, pr_payload())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "accepted"
    subs, dels = rows(db)
    assert subs == [(body["submission_id"], "github", "openai/parameter-golf", 1900, SHA1)]
    assert dels == [("d-1", "accepted", body["submission_id"])]
    assert intake.enqueued == [body["submission_id"]]


@pytest.mark.parametrize("sig", ["", "sha256=" + "0" * 64, "sha1=abc", "deadbeef"])
def test_missing_or_wrong_signature_is_401_and_stores_nothing(hook, sig):
    client, intake, db = hook
    r = post(client, pr_payload(), sig=sig or "")
    assert r.status_code == 401 and r.json()["code"] == "bad_signature"
    assert rows(db) == ([], []) and intake.enqueued == []


def test_signature_over_a_different_body_is_refused(hook):
    client, intake, db = hook
    good = json.dumps(pr_payload()).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), good, hashlib.sha256).hexdigest()
    r = post(client, None, raw=good.replace(b"1900", b"1901"), sig=sig)
    assert r.status_code == 401 and rows(db) == ([], [])
    r = post(client, None, raw=good, sig=sig.replace("sha256=", "sha256= "))
    assert r.status_code == 401


def test_wrong_secret_is_refused(hook):
    client, _, db = hook
    assert post(client, pr_payload(), secret="another-secret").status_code == 401
    assert rows(db) == ([], [])


def test_unconfigured_secret_refuses_everything(hook):
    client, intake, db = hook
    client.app.dependency_overrides[webhooks.webhook_secret] = lambda: None
    r = post(client, pr_payload())
    assert r.status_code == 503 and r.json()["code"] == "webhook_not_configured"
    assert rows(db) == ([], [])


def test_malformed_json_and_payloads_are_400_with_codes(hook):
    client, _, db = hook
    r = post(client, None, raw=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == "bad_json"
    r = post(client, None, raw=b"[1, 2]")
    assert r.status_code == 400 and r.json()["code"] == "bad_json"
    bad = pr_payload()
    del bad["pull_request"]["head"]["sha"]
    r = post(client, bad)
    assert r.status_code == 400 and r.json()["code"] == "bad_payload" and "head.sha" in r.json()["message"]
    r = post(client, pr_payload(repo="../../etc"))
    assert r.status_code == 400 and r.json()["code"] == "bad_payload"
    r = post(client, pr_payload(), delivery="")
    assert r.status_code == 400 and r.json()["code"] == "missing_delivery_id"
    assert rows(db) == ([], [])


def test_duplicate_delivery_runs_one_audit(hook):
    client, intake, db = hook
    first = post(client, pr_payload(), delivery="same")
    again = post(client, pr_payload(), delivery="same")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {"status": "duplicate", "delivery": "same",
                            "submission_id": first.json()["submission_id"]}
    subs, dels = rows(db)
    assert len(subs) == 1 and len(dels) == 1 and len(intake.enqueued) == 1


def test_same_head_under_a_new_delivery_reuses_the_submission(hook):
    client, intake, db = hook
    a = post(client, pr_payload("opened"), delivery="d-a").json()
    b = post(client, pr_payload("reopened"), delivery="d-b").json()
    assert a["submission_id"] == b["submission_id"] and len(intake.enqueued) == 1
    c = post(client, pr_payload("synchronize", sha=SHA2), delivery="d-c").json()
    assert c["submission_id"] != a["submission_id"] and len(intake.enqueued) == 2
    assert {d[1] for d in rows(db)[1]} == {"accepted", "existing_submission"}


@pytest.mark.parametrize("event,payload,why", [
    ("issues", {"action": "opened"}, "event 'issues'"),
    ("push", {"ref": "refs/heads/main"}, "event 'push'"),
    ("pull_request", pr_payload("closed"), "action 'closed'"),
    ("pull_request", pr_payload("labeled"), "action 'labeled'"),
])
def test_other_events_and_actions_are_ignored(hook, event, payload, why):
    client, intake, db = hook
    r = post(client, payload, event=event)
    assert r.status_code == 202 and r.json()["status"] == "ignored" and why in r.json()["reason"]
    assert rows(db) == ([], []) and intake.enqueued == []


def test_ping_answers_pong(hook):
    client, _, db = hook
    r = post(client, {"zen": "Keep it logically awesome.", "hook_id": 7}, event="ping")
    assert r.status_code == 200 and r.json() == {"status": "pong", "hook_id": 7}
    assert rows(db) == ([], [])


def test_failed_enqueue_is_retried_by_the_redelivery(hook):
    client, intake, db = hook
    intake.fail_enqueue = True
    r = post(client, pr_payload(), delivery="d-x")
    assert r.status_code == 503 and r.json()["code"] == "intake_unavailable"
    assert rows(db)[1][0][1] == "received"          # recorded, not yet queued
    intake.fail_enqueue = False
    r = post(client, pr_payload(), delivery="d-x")  # GitHub "Redeliver"
    assert r.status_code == 200 and len(intake.enqueued) == 1
    assert rows(db)[1][0][1] == "accepted"
    post(client, pr_payload(), delivery="d-x")
    assert len(intake.enqueued) == 1


# ------------------------------------------------------------------------------- the client

def test_find_records_folder_one_none_several():
    f = find_records_folder([{"filename": "records/track_10min_16mb/A/README.md", "status": "added"},
                             {"filename": "records/track_10min_16mb/A/logs/x.log", "status": "added"},
                             {"filename": "records/track_10min_16mb/Old/README.md", "status": "removed"},
                             {"filename": "README.md", "status": "modified"}])
    assert (f.path, f.track, f.name) == ("records/track_10min_16mb/A", "track_10min_16mb", "A")
    with pytest.raises(GitHubError) as e:
        find_records_folder([{"filename": "train_gpt.py", "status": "modified"},
                             {"filename": "records/track_10min_16mb/README.md", "status": "added"}])
    assert e.value.code == "no_records_folder"
    with pytest.raises(GitHubError) as e:
        find_records_folder([{"filename": "records/track_10min_16mb/A/x", "status": "added"},
                             {"filename": "records/track_non_record_16mb/B/y", "status": "modified"}])
    assert e.value.code == "several_records_folders" and "track_non_record_16mb/B" in e.value.message


def test_fetch_pr_folder_downloads_the_folder_at_the_head_sha(github, tmp_path):
    state, _, client = github
    records_pr(state, sha=SHA1)
    state.trees[SHA1]["records/track_10min_16mb/2026-11-20_MyRecord/README.md"] = b"# at head\n"
    state.trees[SHA2] = {"records/track_10min_16mb/2026-11-20_MyRecord/README.md": b"# other commit\n"}
    got = fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "f", client=client)
    assert got.folder.name == "2026-11-20_MyRecord" and got.head_sha == SHA1
    assert got.files == ["README.md", "extra/notes.txt", "submission.json", "train_seed42.log"]
    assert (tmp_path / "f/README.md").read_text() == "# at head\n"
    assert (tmp_path / "f/extra/notes.txt").read_bytes() == b"nested file\n"
    assert got.total_bytes == sum(p.stat().st_size for p in (tmp_path / "f").rglob("*") if p.is_file())


def test_fetch_pr_folder_without_sha_uses_the_pr_head(github, tmp_path):
    state, _, client = github
    records_pr(state, sha=SHA2, number=5)
    got = fetch_pr_folder("openai/parameter-golf", 5, None, tmp_path / "g", client=client)
    assert got.head_sha == SHA2 and ("GET", "/repos/openai/parameter-golf/pulls/5") in state.requests


def test_fetch_pr_folder_applies_upload_limits_and_skips_links(github, tmp_path):
    state, _, client = github
    records_pr(state, sha=SHA1, files={f"f{i}.log": b"x" * 10 for i in range(5)})
    with pytest.raises(InputError) as e:
        fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "a", client=client,
                        limits=Limits(max_members=3))
    assert e.value.code == "too_many_members"
    with pytest.raises(InputError) as e:
        fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "b", client=client,
                        limits=Limits(max_total_bytes=40))
    assert e.value.code == "too_large"
    assert not list((tmp_path / "b").glob("*"))       # refused before downloading anything
    state.symlinks[SHA1] = {"records/track_10min_16mb/2026-11-20_MyRecord/f0.log"}
    got = fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "c", client=client)
    assert got.skipped == ["f0.log"] and "f0.log" not in got.files


def test_pr_without_or_with_several_folders_is_a_clear_error(github, tmp_path):
    state, _, client = github
    records_pr(state, number=1, sha=SHA1, extra_changed=[
        {"filename": "records/track_10min_16mb/Other/README.md", "status": "added"}])
    with pytest.raises(GitHubError) as e:
        fetch_pr_folder("openai/parameter-golf", 1, SHA1, tmp_path, client=client)
    assert e.value.code == "several_records_folders"
    with pytest.raises(GitHubError) as e:
        fetch_pr_folder("openai/parameter-golf", 404, SHA1, tmp_path, client=client)
    assert e.value.code == "github_not_found"


def test_pr_files_are_paginated(github):
    state, _, client = github
    files = [{"filename": f"records/track_10min_16mb/A/f{i}.txt", "status": "added"} for i in range(250)]
    state.prs[9] = records_pr(state, number=9, files={})
    state.prs[9].files = files
    assert len(client.pr_files("openai/parameter-golf", 9)) == 250
    assert sum(1 for m, p in state.requests if p.endswith("/pulls/9/files")) == 3


def test_retries_on_5xx_and_secondary_rate_limit_then_succeeds(github):
    state, _, client = github
    state.fail_next = [(502, {}, {"message": "Bad gateway"}),
                       (403, {"Retry-After": "3"}, {"message": "You have exceeded a secondary rate limit"})]
    assert client.login() == BOT
    sleeps = [float(p) for m, p in state.requests if m == "SLEEP"]
    assert sleeps == [1.0, 3.0]                       # backoff, then the server's Retry-After


def test_errors_after_retries_have_stable_codes(github):
    state, server, client = github
    state.fail_next = [(503, {}, {"message": "down"})] * 4
    with pytest.raises(GitHubError) as e:
        client.pr_files("openai/parameter-golf", 1900)
    assert e.value.code == "github_unavailable" and e.value.status == 503
    assert sum(1 for m, _ in state.requests if m == "SLEEP") == 3
    bad = GitHubClient(server.url, "wrong-token", sleep=lambda s: None)
    with pytest.raises(GitHubError) as e:
        bad.pr_files("openai/parameter-golf", 1900)
    assert e.value.code == "github_auth" and "wrong-token" not in e.value.message
    bad.close()
    dead = GitHubClient("http://127.0.0.1:9", TOKEN, sleep=lambda s: None, retries=1, timeout_s=2)
    with pytest.raises(GitHubError) as e:
        dead.pr_files("openai/parameter-golf", 1)
    assert e.value.code == "github_unavailable"
    dead.close()
    with pytest.raises(GitHubError) as e:
        client.pr_files("not a repo", 1)
    assert e.value.code == "bad_repo"


def test_sticky_comment_is_created_once_then_edited(github):
    state, _, client = github
    state.add_comment(1900, "LGTM", "maintainer")
    state.add_comment(1900, f"{STICKY_MARKER}\nnot ours", "someone-else")   # a copycat marker
    cid, created = client.upsert_sticky_comment("openai/parameter-golf", 1900, "first verdict")
    cid2, created2 = client.upsert_sticky_comment("openai/parameter-golf", 1900, "second verdict")
    assert created and not created2 and cid == cid2
    ours = [c for c in state.comments if c["user"]["login"] == BOT]
    assert len(ours) == 1 and ours[0]["body"] == f"{STICKY_MARKER}\nsecond verdict"
    assert [c["body"] for c in state.comments if c["user"]["login"] == "someone-else"] == [f"{STICKY_MARKER}\nnot ours"]


def test_sticky_comment_with_an_app_token_that_cannot_ask_its_login(github):
    state, server, client = github
    state.login = None                                   # GET /user → 403, comments by app[bot]
    state.add_comment(1900, f"{STICKY_MARKER}\ncopycat", "someone-else")
    cid, created = client.upsert_sticky_comment("openai/parameter-golf", 1900, "v1")
    assert created                                       # editing the copycat was refused → created
    fresh = GitHubClient(server.url, TOKEN, sleep=lambda s: None)   # a new process: login unknown
    cid2, created2 = fresh.upsert_sticky_comment("openai/parameter-golf", 1900, "v2")
    fresh.close()
    assert cid2 == cid and not created2 and len(state.comments) == 2
    assert state.comments[0]["body"].endswith("copycat") and state.comments[1]["body"].endswith("v2")


def test_long_comment_is_truncated_below_githubs_limit(github):
    state, _, client = github
    client.upsert_sticky_comment("openai/parameter-golf", 1900, "x" * 100_000)
    assert 60_000 < len(state.comments[0]["body"]) <= 65_000 and "truncated" in state.comments[0]["body"]


# ------------------------------------------------------------------------------- notify

def test_commit_state_mapping():
    v = {"outcome": "fail", "rules": [{"outcome": "fail"}, {"outcome": "needs_review"}],
         "statistics": {"mean_bpb": 1.06123}}
    assert commit_state(v, "failed") == ("failure", "FAIL: 1 fail, 1 need review; mean 1.06123 bpb")
    assert commit_state({"outcome": "pass", "rules": []}, "passed") == ("success", "PASS: all rules pass")
    assert commit_state({"outcome": "needs_review", "rules": []}, "needs_review")[0] == "pending"
    assert commit_state(None, "running") == ("pending", "Audit running…")
    assert commit_state(None, "error_infra", "x" * 500)[0] == "error"
    assert len(commit_state(None, "error_infra", "x" * 500)[1]) <= 139


def test_summary_markdown_neutralizes_submission_text():
    md = summary_markdown({"outcome": "fail", "policy": "p", "submission": {"name": "@org/team <img src=x>"},
                           "rules": [{"outcome": "fail", "id": "artifact-size", "code": "PG201",
                                      "message": "a | b\nc"}]})
    assert "@\u200borg" in md and "<img" not in md and "a \\| b c" in md


def _settings(tmp_path, db_url, server_url):
    from store.settings import Settings
    return Settings(home=tmp_path, database_url=db_url, github_api_url=server_url, github_token=TOKEN,
                    public_base_url="https://audit.example")


def _store_verdict(db_url, submission_id, verdict, state):
    from store.db import session_scope
    from store.models import Submission, Verdict
    with session_scope(db_url) as s:
        s.add(Verdict(submission_id=submission_id, outcome=verdict["outcome"], body=verdict))
        s.get(Submission, submission_id).state = state


def test_webhook_to_status_and_sticky_comment_end_to_end(hook, github, tmp_path):
    """opened → fetch folder → verdict → notify; synchronize → same comment edited, new status."""
    client, intake, db = hook
    state, server, gh = github
    settings = _settings(tmp_path, db, server.url)
    records_pr(state, sha=SHA1)
    sub1 = post(client, pr_payload("opened", sha=SHA1), delivery="e1").json()["submission_id"]
    got = fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "s1", client=gh)
    assert "submission.json" in got.files
    # before the verdict: a pending status, an "in progress" comment
    out = notify_github(sub1, settings=settings, client=gh)
    assert out["state"] == "pending" and out["comment_created"]
    verdict = {"outcome": "fail", "policy": "leaderboard-2026-04", "submission": {"name": "My record"},
               "rules": [{"id": "artifact-size", "code": "PG201", "outcome": "fail",
                          "message": "16,000,086 bytes is over the cap"}],
               "statistics": {"n": 3, "mean_bpb": 1.0601, "p_value": 0.01, "significant": True}}
    _store_verdict(db, sub1, verdict, "failed")
    out = notify_github(sub1, settings=settings, client=gh)
    assert out["state"] == "failure" and not out["comment_created"]
    report = f"https://audit.example/v1/submissions/{sub1}/report"
    assert state.statuses[-1] == {"state": "failure", "context": "pgolf-audit", "sha": SHA1,
                                  "description": "FAIL: 1 fail; mean 1.06010 bpb", "target_url": report}
    body = [c for c in state.comments if c["pr"] == 1900][0]["body"]
    assert body.startswith(STICKY_MARKER) and report in body and "artifact-size" in body
    # a new push: new submission, same sticky comment, a status on the new head
    records_pr(state, sha=SHA2)
    sub2 = post(client, pr_payload("synchronize", sha=SHA2), delivery="e2").json()["submission_id"]
    assert sub2 != sub1
    _store_verdict(db, sub2, {**verdict, "outcome": "pass", "rules": []}, "passed")
    out = notify_github(sub2, settings=settings, client=gh)
    assert out["state"] == "success" and not out["comment_created"]
    assert len([c for c in state.comments if c["pr"] == 1900]) == 1
    assert f"/v1/submissions/{sub2}/report" in state.comments[0]["body"]
    assert [(s["sha"], s["state"]) for s in state.statuses] == [(SHA1, "pending"), (SHA1, "failure"),
                                                                (SHA2, "success")]
    from store.db import session_scope
    from store.models import Submission
    with session_scope(db) as s:
        assert s.get(Submission, sub2).notified_at is not None and s.get(Submission, sub2).notify_error is None


def test_notify_records_github_failures_and_skips_uploads(hook, github, tmp_path):
    client, _, db = hook
    state, server, gh = github
    settings = _settings(tmp_path, db, server.url)
    sub = post(client, pr_payload(), delivery="n1").json()["submission_id"]
    state.fail_next = [(500, {}, {"message": "boom"})] * 4
    out = notify_github(sub, settings=settings, client=gh)
    assert out["code"] == "github_unavailable"
    from store.db import session_scope
    from store.models import Submission
    with session_scope(db) as s:
        assert "HTTP 500" in s.get(Submission, sub).notify_error
        s.add(Submission(id="up1", sha256="f" * 64, source_kind="upload"))
    assert notify_github("up1", settings=settings, client=gh) == {"skipped": "not a GitHub pull request submission"}
    assert notify_github("nope", settings=settings, client=gh) == {"skipped": "unknown submission"}


def test_comment_uses_the_rules_markdown_renderer_on_the_stored_json(shared_dir):
    """The stored verdict JSON, turned back into the model, renders exactly as the original."""
    render = pytest.importorskip("rules.render")
    from rules.engine import check
    from worker.notify import comment_markdown, verdict_object

    v = check(shared_dir / "fixtures/records/track_10min_16mb/2026-04-29_SmearGateBOSFix_3Seed_1.06141")
    as_json = json.loads(json.dumps(v.to_json()))      # what the store gives back
    assert render.markdown(verdict_object(as_json)) == render.markdown(v)
    body = comment_markdown(as_json, "https://audit.example/v1/submissions/x/report", head_sha=SHA1)
    assert body.startswith(render.markdown(v).rstrip()[:200])
    assert "[Full report](https://audit.example/v1/submissions/x/report)" in body and "`1111111111`" in body


def test_webhook_through_the_real_store_intake_and_queue(tmp_path):
    """No fakes on our side: the default StoreIntake, the app's settings, worker.enqueue and
    the embedded broker (kombu on SQLite); one audit job is recorded for a redelivered event."""
    pytest.importorskip("worker.enqueue")
    from store.db import dispose_engines, migrate, session_scope
    from store.models import AuditJob
    from store.settings import Settings

    settings = Settings(home=tmp_path, github_webhook_secret=SECRET)
    settings.ensure_dirs()
    migrate(settings.database_url)
    app = FastAPI()
    app.state.settings = settings
    app.include_router(webhooks.router)
    client = TestClient(app)
    try:
        r = post(client, pr_payload(), delivery="real-1")
        assert r.status_code == 202, r.text
        again = post(client, pr_payload(), delivery="real-1")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        with session_scope(settings.database_url) as s:
            jobs = s.query(AuditJob).all()
            # one job for two deliveries, published once on the embedded broker
            assert [(j.submission_id, j.kind, j.state) for j in jobs] == [(r.json()["submission_id"], "static", "queued")]
            assert jobs[0].celery_task_id and jobs[0].published_at is not None
        assert rows(settings.database_url)[1] == [("real-1", "accepted", r.json()["submission_id"])]
    finally:
        dispose_engines()


def test_oversized_payload_is_413_before_anything_else(hook):
    client, intake, db = hook
    big = json.dumps({**pr_payload(), "padding": "x" * (webhooks.MAX_BODY_BYTES + 10)}).encode()
    r = post(client, None, raw=big)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    chunked = client.post("/v1/webhooks/github", content=iter([big[:1 << 20]] * 6),   # no Content-Length
                          headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "c1"})
    assert chunked.status_code == 413 and chunked.json()["code"] == "payload_too_large"
    assert rows(db) == ([], []) and intake.enqueued == []


def test_webhook_mounted_in_the_service_app(tmp_path):
    """The route as the service mounts it (api.app.create_app with explicit settings)."""
    app_mod = pytest.importorskip("api.app")
    from store.db import dispose_engines, migrate
    from store.settings import Settings

    settings = Settings(home=tmp_path, github_webhook_secret=SECRET)
    settings.ensure_dirs()
    migrate(settings.database_url)
    try:
        with TestClient(app_mod.create_app(settings)) as client:
            assert post(client, pr_payload(), secret="nope").status_code == 401
            r = post(client, pr_payload(), delivery="app-1")
            assert r.status_code == 202 and r.json()["status"] == "accepted"
            sub = client.get(f"/v1/submissions/{r.json()['submission_id']}")
            assert sub.status_code == 200, sub.text
            assert post(client, {"zen": "z"}, event="ping").json()["status"] == "pong"
            assert "/v1/webhooks/github" in client.get("/openapi.json").json()["paths"]
    finally:
        dispose_engines()


def test_long_rate_limit_waits_fail_fast_instead_of_blocking_the_worker(github):
    import time as _time

    state, _, client = github
    state.fail_next = [(403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(_time.time()) + 1800)},
                        {"message": "API rate limit exceeded"})]
    with pytest.raises(GitHubError) as e:
        client.pr_files("openai/parameter-golf", 1900)
    assert e.value.code == "github_rate_limited" and e.value.status == 403
    assert not [m for m, _ in state.requests if m == "SLEEP"]
    state.fail_next = [(429, {"Retry-After": "600"}, {"message": "slow down"})]
    with pytest.raises(GitHubError) as e:
        client.pr_files("openai/parameter-golf", 1900)
    assert e.value.code == "github_rate_limited"


def test_notify_without_a_token_records_why(hook, tmp_path):
    from store.settings import Settings

    client, _, db = hook
    sub = post(client, pr_payload(), delivery="t1").json()["submission_id"]
    settings = Settings(home=tmp_path, database_url=db, github_token=None)
    out = notify_github(sub, settings=settings)
    assert "no GitHub token" in out["error"]
    from store.db import session_scope
    from store.models import Submission
    with session_scope(db) as s:
        assert "PGOLF_AUDIT_GITHUB_TOKEN" in s.get(Submission, sub).notify_error


def test_comment_never_mentions_people_from_submission_text():
    from worker.notify import comment_markdown

    verdict = {"outcome": "pass", "policy": "p", "submission": {"name": "thanks @openai/team and @bob"},
               "rules": [{"id": "package-layout", "code": "PG101", "outcome": "pass",
                          "message": "README credits @alice"}], "seeds": [], "statistics": None}
    body = comment_markdown(verdict, "https://audit.example/r")
    assert not re.search(r"@[A-Za-z0-9]", body)
    assert "@\u200bopenai/team" in body and "@\u200bbob" in body


def test_files_over_the_contents_api_limit_are_refused_up_front(github, tmp_path, monkeypatch):
    import worker.github as gh_mod

    state, _, client = github
    records_pr(state, sha=SHA1, files={"README.md": b"x" * 50, "model.ptz": b"y" * 300})
    monkeypatch.setattr(gh_mod, "CONTENTS_MAX_FILE_BYTES", 200)
    with pytest.raises(InputError) as e:
        fetch_pr_folder("openai/parameter-golf", 1900, SHA1, tmp_path / "d", client=client)
    assert e.value.code == "too_large" and "model.ptz" in e.value.message
    assert not any("/contents/" in p and p.endswith((".md", ".ptz")) for _, p in state.requests)
