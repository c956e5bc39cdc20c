"""Tell GitHub what the audit found: the `pgolf-audit` commit status and one sticky PR comment.

`notify_github(submission_id)` reads the submission and its verdict from the store and posts:
  * a commit status on the head SHA — pass → success, fail → failure, needs_review → pending
    (a human still has to decide, so the check is not green and not red), audit still running →
    pending, infrastructure error / cancelled / unreadable submission → error — whose target_url
    is the HTML report;
  * the sticky comment: the verdict in Markdown (`rules.render` when available, else a short
    summary built here) with the report link, edited in place on every new push.

It only talks to GitHub for submissions that came from GitHub, never raises on a GitHub problem
(it returns and stores the reason in `submissions.notify_error`), so a notification failure never
turns an audit into an error.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

from .github import GitHubClient, GitHubError

log = logging.getLogger(__name__)

STATES = {"pass": "success", "fail": "failure", "needs_review": "pending"}
IN_PROGRESS = {"received", "validating", "queued", "running", "judging"}
LABELS = {"pass": "PASS", "fail": "FAIL", "needs_review": "NEEDS REVIEW"}


def report_url(base_url: str, submission_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/submissions/{submission_id}/report"


def commit_state(verdict: dict | None, submission_state: str | None,
                 error_message: str | None = None) -> tuple[str, str]:
    """(GitHub status state, description ≤ 140 chars) for a submission and its verdict."""
    if verdict and verdict.get("outcome") in STATES:
        outcome = verdict["outcome"]
        counts = _counts(verdict)
        parts = [f"{counts['fail']} fail" if counts["fail"] else "",
                 f"{counts['needs_review']} need review" if counts["needs_review"] else "",
                 f"{counts['warn']} warn" if counts["warn"] else ""]
        mean = (verdict.get("statistics") or {}).get("mean_bpb")
        text = f"{LABELS[outcome]}: " + (", ".join(p for p in parts if p) or "all rules pass")
        if isinstance(mean, (int, float)):
            text += f"; mean {mean:.5f} bpb"
        return STATES[outcome], text[:139]
    if submission_state in IN_PROGRESS:
        return "pending", f"Audit {submission_state}…"
    if submission_state == "cancelled":
        return "error", "Audit cancelled by a maintainer."
    return "error", (error_message or "The audit could not finish (infrastructure error).")[:139]


def comment_markdown(verdict: dict | None, url: str, *, submission_state: str | None = None,
                     error_message: str | None = None, head_sha: str | None = None) -> str:
    """The sticky comment: Markdown verdict + link. Uses rules.render when it is there."""
    head = f" for `{head_sha[:10]}`" if head_sha else ""
    if not verdict:
        state, desc = commit_state(None, submission_state, error_message)
        return (f"### pgolf-audit{head}: {desc}\n\n"
                + ("The audit is in progress; this comment will be updated.\n\n" if state == "pending" else "")
                + f"[Report]({url})\n")
    body = _markdown_from_rules(verdict)
    if body is None:
        body = summary_markdown(verdict)
    body = _no_mentions(body)
    return f"{body.rstrip()}\n\n---\n[Full report]({url}) · audited{head} by pgolf-audit\n"


def _no_mentions(text: str) -> str:
    """Submission text (authors, READMEs quoted in messages) must not @-mention people or teams
    from our comment: a zero-width space after '@' keeps it readable and inert."""
    return re.sub(r"@(?=[A-Za-z0-9])", "@\u200b", text)


def _markdown_from_rules(verdict: dict) -> str | None:
    """`rules.render.markdown` (it takes the Verdict dataclass): None when it is not there or
    fails, so the comment falls back to `summary_markdown`."""
    try:
        from rules import render
    except ImportError:
        return None
    fn = getattr(render, "markdown", None)
    if not callable(fn):
        return None
    try:
        text = fn(verdict_object(verdict))
    except Exception as exc:  # a renderer bug must not stop the notification
        log.warning("rules.render.markdown failed: %s", exc)
        return None
    return text if isinstance(text, str) and text.strip() else None


def verdict_object(d: dict) -> Any:
    """The verdict JSON back as `rules.model` dataclasses."""
    from rules.model import verdict_from_json
    return verdict_from_json(d)


def summary_markdown(verdict: dict) -> str:
    """A short Markdown verdict: outcome, problem rules, statistics line."""
    outcome = verdict.get("outcome", "needs_review")
    emoji = {"pass": "✅", "fail": "❌", "needs_review": "⚠️"}.get(outcome, "")
    name = (verdict.get("submission") or {}).get("name") or "submission"
    lines = [f"### {emoji} pgolf-audit: **{LABELS.get(outcome, outcome)}** — {_md(name)}",
             f"Policy `{_md(verdict.get('policy') or '?')}`.", ""]
    problems = [r for r in verdict.get("rules") or []
                if isinstance(r, dict) and r.get("outcome") in ("fail", "needs_review", "warn")]
    if problems:
        lines += ["| outcome | rule | finding |", "|---|---|---|"]
        for r in problems:
            lines.append(f"| {r.get('outcome')} | `{_md(r.get('code') or '')}` {_md(r.get('id') or '')} "
                         f"| {_md(r.get('message') or '')} |")
    else:
        lines.append("Every applicable rule passes.")
    stats = verdict.get("statistics") or {}
    if isinstance(stats.get("mean_bpb"), (int, float)):
        p = stats.get("p_value")
        lines += ["", f"Mean val_bpb **{stats['mean_bpb']:.5f}** over {stats.get('n', '?')} seeds"
                  + (f", p = {p:.3g}" if isinstance(p, (int, float)) else "")
                  + (f" (significant: {'yes' if stats.get('significant') else 'no'})"
                     if isinstance(stats.get("significant"), bool) else "") + "."]
    return "\n".join(lines)


def _md(text: Any) -> str:
    """Neutralize Markdown/HTML from submissions in the comment (tables, mentions, tags)."""
    s = str(text).replace("\n", " ").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("@", "@\u200b")[:300]


def _counts(verdict: dict) -> dict[str, int]:
    out = {"fail": 0, "needs_review": 0, "warn": 0}
    for r in verdict.get("rules") or []:
        if isinstance(r, dict) and r.get("outcome") in out:
            out[r["outcome"]] += 1
    return out


def notify_github(submission_id: str, *, settings: Any = None,
                  client: GitHubClient | None = None) -> dict[str, Any]:
    """Post the commit status and sticky comment for one submission. Returns what was done
    ({"skipped": reason} | {"state", "comment_id", "comment_created"} | {"error", "code"})."""
    from store import repo
    from store.db import session_scope

    if settings is None:
        from store.settings import get_settings
        settings = get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            return {"skipped": "unknown submission"}
        if sub.source_kind != "github" or not sub.repo or not sub.pr:
            return {"skipped": "not a GitHub pull request submission"}
        row = repo.get_verdict(s, submission_id)
        verdict = dict(row.body) if row is not None else None
        repo, pr, head_sha, state = sub.repo, sub.pr, sub.head_sha, sub.state
        error = sub.error_message
    if not settings.github_token:
        return _record(settings, submission_id, None, "no GitHub token configured (PGOLF_AUDIT_GITHUB_TOKEN)")
    url = report_url(settings.public_base_url, submission_id)
    gh_state, description = commit_state(verdict, state, error)
    body = comment_markdown(verdict, url, submission_state=state, error_message=error, head_sha=head_sha)
    own = client is None
    gh = client or GitHubClient.from_settings(settings)
    try:
        if head_sha:
            gh.set_status(repo, head_sha, gh_state, description, url)
        cid, created = gh.upsert_sticky_comment(repo, pr, body)
    except GitHubError as exc:
        log.warning("GitHub notification for %s failed: %s", submission_id, exc.message)
        return {**_record(settings, submission_id, None, exc.message), "code": exc.code}
    finally:
        if own:
            gh.close()
    _record(settings, submission_id, datetime.now(timezone.utc), None)
    return {"state": gh_state, "description": description, "comment_id": cid, "comment_created": created}


def _record(settings: Any, submission_id: str, at: datetime | None, error: str | None) -> dict[str, Any]:
    from store.db import session_scope
    from store.models import Submission

    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is not None:
            if at is not None:
                sub.notified_at = at
            sub.notify_error = error
    return {"error": error} if error else {}
