"""GitHub sources through the worker: the PR's records folder is fetched (from a local fake of
the GitHub API), stored like an upload, audited, and the PR notified. A PR without a records
folder is the submitter's problem; GitHub being down is not."""
from __future__ import annotations

import pytest

from store import repo
from store.db import session_scope
from tests.api.fake_github import TOKEN, FakeGitHub, FakeGitHubServer, records_pr
from tests.service.conftest import make_settings
from worker.tasks import InfraError, run_audit, run_notify


@pytest.fixture
def github(tmp_path):
    state = FakeGitHub()
    with FakeGitHubServer(state) as server:
        settings = make_settings(tmp_path / "home", github_api_url=server.url, github_token=TOKEN,
                                 public_base_url="https://audit.example")
        settings.ensure_dirs()
        from store.db import migrate
        migrate(settings.database_url)
        yield settings, state


def _github_submission(settings, pr: int, head_sha: str | None = None) -> str:
    with session_scope(settings.database_url) as s:
        sub, _ = repo.create_or_get_submission(
            s, sha256=repo.github_identity("openai/parameter-golf", pr=pr, head_sha=head_sha),
            source_kind="github", repo="openai/parameter-golf", pr=pr, head_sha=head_sha)
        repo.create_job(s, sub, "static", deadline_s=60)
        return sub.id


def test_pr_is_fetched_audited_and_notified(github, record_folders) -> None:
    settings, state = github
    files = {p.relative_to(record_folders[0]).as_posix(): p.read_bytes()
             for p in record_folders[0].rglob("*") if p.is_file()}
    records_pr(state, number=1900, sha="c" * 40, files=files,
               folder=f"records/track_10min_16mb/{record_folders[0].name}")
    sid = _github_submission(settings, 1900)
    assert run_audit(sid, settings) in ("passed", "failed", "needs_review")
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        assert sub.head_sha == "c" * 40 and sub.folder_key and sub.content_sha256
        assert sub.folder_key.endswith(f"track_10min_16mb/{record_folders[0].name}")
        verdict = repo.get_verdict(s, sid).body
        assert verdict["submission"]["track"] == "10min_16mb"
        assert sorted(verdict["submission"]["files"]) == sorted(files)
    done = run_notify(sid, settings)
    assert "error" not in done and done.get("comment_created") is True, done
    assert state.statuses and state.statuses[-1]["sha"] == "c" * 40
    assert "https://audit.example" in state.comments[-1]["body"]
    with session_scope(settings.database_url) as s:
        assert repo.get_submission(s, sid).notified_at is not None


def test_pr_without_a_records_folder_fails_with_its_code(github) -> None:
    settings, state = github
    from tests.api.fake_github import FakePR
    state.prs[7] = FakePR(number=7, head_sha="d" * 40,
                          files=[{"filename": "README.md", "status": "modified"}])
    state.trees["d" * 40] = {"README.md": b"x"}
    sid = _github_submission(settings, 7)
    assert run_audit(sid, settings) == "input_error"
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        assert sub.state == "failed" and sub.error_code == "no_records_folder"


def test_github_down_is_an_infrastructure_error(github, monkeypatch) -> None:
    from worker.github import GitHubClient

    make = GitHubClient.from_settings.__func__
    monkeypatch.setattr(GitHubClient, "from_settings", classmethod(
        lambda cls, settings=None, **kw: make(cls, settings, backoff_s=0.01, **kw)))
    settings, state = github
    records_pr(state, number=8, sha="e" * 40)
    state.fail_next.extend([(502, {}, {"message": "bad gateway"})] * 10)
    sid = _github_submission(settings, 8)
    with pytest.raises(InfraError):
        run_audit(sid, settings)
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, sid)
        assert sub.state == "validating" and sub.error_code is None   # nothing blamed on the PR
