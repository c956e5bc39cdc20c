"""`POST /v1/webhooks/github`: GitHub tells us a pull request was opened or pushed to.

Order of checks (each answer is JSON with a stable `code` or `status`):
  1. the secret is configured (else 503 `webhook_not_configured`: refuse rather than trust);
  2. the body is at most 5 MB (413 `payload_too_large`);
  3. `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under the secret, compared in
     constant time (missing or wrong → 401 `bad_signature`; nothing is parsed or stored);
  4. the body is a JSON object (400 `bad_json`), with an `X-GitHub-Delivery` id (400
     `missing_delivery_id`);
  5. `ping` → 200; other events, and pull_request actions other than opened / synchronize /
     reopened → 202 `ignored` with the reason (nothing stored);
  6. an actionable PR: the delivery id is recorded (a redelivery → 200 `duplicate`, no second
     audit), the submission is created (source github, repo, PR, head SHA) and the audit is
     enqueued → 202 `accepted` with the submission id.

The handler does no GitHub calls and no auditing: GitHub expects an answer within 10 s, so the
work (fetching the folder, auditing, the status and sticky comment) happens in the worker.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

MAX_BODY_BYTES = 5 * 1024 * 1024
ACTIONS = ("opened", "synchronize", "reopened")


@dataclass
class PullRequestDelivery:
    delivery_id: str
    event: str
    action: str
    repo: str
    pr: int
    head_sha: str
    head_repo: str | None = None
    title: str | None = None


class WebhookIntake(Protocol):
    """What the route needs from the service (the store + the queue)."""

    def accept(self, delivery: PullRequestDelivery) -> tuple[str | None, bool]:
        """Record the delivery; unless it was seen before, create the submission and enqueue
        its audit. Returns (submission id, False if the delivery id was already recorded)."""


def _settings(request: Request) -> Any:
    """The app's settings object (`app.state.settings`), else the process-wide one."""
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        from store.settings import get_settings
        settings = get_settings()
    return settings


def webhook_secret(request: Request) -> str | None:
    """Dependency: the shared secret GitHub signs with (override in tests)."""
    return _settings(request).github_webhook_secret


def webhook_intake(request: Request) -> WebhookIntake:
    """Dependency: the store + queue intake bound to this app's settings (override in tests)."""
    return StoreIntake(_settings(request))


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's `sha256=<hex>` HMAC of the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


@router.post("/v1/webhooks/github", summary="GitHub webhook (pull_request events)")
async def github_webhook(request: Request, secret: str | None = Depends(webhook_secret),
                         intake: WebhookIntake = Depends(webhook_intake)) -> JSONResponse:
    if not secret:
        return _problem(503, "webhook_not_configured",
                        "The GitHub webhook secret is not configured (PGOLF_AUDIT_GITHUB_WEBHOOK_SECRET).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _problem(413, "payload_too_large", "The webhook payload is larger than 5 MB.")
    chunks, size = [], 0
    async for chunk in request.stream():   # capped even when the body comes chunked
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _problem(413, "payload_too_large", "The webhook payload is larger than 5 MB.")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not signature_ok(secret, body, request.headers.get("x-hub-signature-256")):
        return _problem(401, "bad_signature",
                        "X-Hub-Signature-256 is missing or does not match the payload.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _problem(400, "bad_json", "The webhook body is not valid JSON.")
    if not isinstance(payload, dict):
        return _problem(400, "bad_json", "The webhook body is not a JSON object.")
    delivery_id = (request.headers.get("x-github-delivery") or "").strip()
    if not delivery_id or len(delivery_id) > 100:
        return _problem(400, "missing_delivery_id",
                        "The X-GitHub-Delivery header is missing or longer than 100 characters.")
    event = (request.headers.get("x-github-event") or "").strip()
    if event == "ping":
        return JSONResponse({"status": "pong", "hook_id": payload.get("hook_id")}, status_code=200)
    if event != "pull_request":
        return _ignored(f"event {event or '(none)'!r} is not audited; subscribe to pull_request only")
    action = payload.get("action")
    if action not in ACTIONS:
        return _ignored(f"pull_request action {action!r} does not change the code to audit")
    delivery = _pull_request(payload, delivery_id, event)
    if isinstance(delivery, str):
        return _problem(400, "bad_payload", delivery)
    try:
        submission_id, new = await run_in_threadpool(intake.accept, delivery)  # DB + broker I/O
    except Exception:  # the store or queue is down: GitHub shows the failure, a redelivery retries
        log.exception("webhook delivery %s could not be recorded", delivery_id)
        return _problem(503, "intake_unavailable",
                        "The audit could not be queued right now; redeliver the webhook later.")
    if not new:
        return JSONResponse({"status": "duplicate", "delivery": delivery_id,
                             "submission_id": submission_id}, status_code=200)
    return JSONResponse({"status": "accepted", "delivery": delivery_id,
                         "submission_id": submission_id}, status_code=202)


def _ignored(reason: str) -> JSONResponse:
    return JSONResponse({"status": "ignored", "reason": reason}, status_code=202)


def _pull_request(payload: dict[str, Any], delivery_id: str, event: str) -> PullRequestDelivery | str:
    """The fields we act on, or a sentence saying which one is missing."""
    pr = payload.get("pull_request")
    repo = (payload.get("repository") or {}).get("full_name") if isinstance(payload.get("repository"), dict) else None
    if not isinstance(pr, dict):
        return "pull_request is missing from the payload."
    number = payload.get("number", pr.get("number"))
    head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    sha = head.get("sha")
    if not isinstance(repo, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        return "repository.full_name is missing or not owner/name."
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        return "The pull request number is missing."
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
        return "pull_request.head.sha is missing or not a 40-hex commit id."
    head_repo = (head.get("repo") or {}).get("full_name") if isinstance(head.get("repo"), dict) else None
    return PullRequestDelivery(delivery_id=delivery_id, event=event, action=str(payload["action"]),
                               repo=repo, pr=number, head_sha=sha, head_repo=head_repo,
                               title=str(pr.get("title") or "")[:300] or None)


class StoreIntake:
    """The default intake, on the store's repository functions: `webhook_deliveries`
    de-duplicates, the submission is created (or found: same PR at the same head = same
    submission), and the audit is enqueued after the transaction commits."""

    def __init__(self, settings: Any):
        """`settings`: the app's Settings (preferred), or just a database URL — then the
        queue uses the process-wide settings."""
        if isinstance(settings, str):
            self.settings, self.database_url = None, settings
        else:
            self.settings, self.database_url = settings, settings.database_url

    def accept(self, d: PullRequestDelivery) -> tuple[str | None, bool]:
        from store import repo
        from store.db import session_scope

        with session_scope(self.database_url) as s:
            row, new = repo.record_webhook_delivery(
                s, delivery_id=d.delivery_id, event=d.event, action=d.action, repo=d.repo,
                pr=d.pr, head_sha=d.head_sha, status="received")
            if not new:
                # recorded before; if its enqueue failed then, this redelivery retries it
                retry = row.submission_id if row.status == "received" and row.submission_id else None
                submission_id = row.submission_id
            else:
                sub, created = repo.create_or_get_submission(
                    s, sha256=repo.github_identity(d.repo, pr=d.pr, head_sha=d.head_sha),
                    source_kind="github", repo=d.repo, pr=d.pr, head_sha=d.head_sha, name=d.title)
                repo.link_delivery(s, row, sub, "received" if created else "existing_submission")
                submission_id, retry = sub.id, (sub.id if created else None)
        if retry is not None:
            self._enqueue(retry)
        return submission_id, new

    def _enqueue(self, submission_id: str) -> None:
        """Publish the audit; the delivery stays `received` until this worked, so a
        redelivery of the same id retries it instead of being dropped as a duplicate."""
        from worker.enqueue import EnqueueError, enqueue_audit
        try:
            enqueue_audit(submission_id, settings=self.settings)
        except EnqueueError as exc:   # the job row is committed: the sweeper publishes it later
            log.warning("webhook submission %s stored, not yet queued: %s", submission_id, exc)
        self._mark_submission(submission_id)

    def _mark_submission(self, submission_id: str) -> None:
        from sqlalchemy import update

        from store.db import session_scope
        from store.models import WebhookDelivery
        with session_scope(self.database_url) as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.submission_id == submission_id,
                                                    WebhookDelivery.status == "received")
                      .values(status="accepted"))
