"""The audit pipeline as Celery tasks: intake → static audit → judge → notify.

Every task is keyed by submission id and idempotent. A task first *claims* the submission's job
(`store.repo.claim_job`: an atomic update that only one delivery wins, and that a delivery can
take over once the previous holder stopped heart-beating); redelivered messages for finished work
return at once. Failures are sorted three ways, each with a stored reason code:

- bad input (`rules.errors.InputError`, a GitHub folder that is not a records folder): the
  submission goes to `failed` with the input error's code — the submitter's problem, said once;
- infrastructure (database, broker, disk, GitHub unreachable): `error_infra`, retried with
  exponential backoff, never counted against the submitter;
- a bug of ours (anything else): `error_infra` with `internal_error`, not retried (it would fail
  the same way), logged with its traceback for the operator — never shown to the submitter.

The plain functions (`run_audit`, `run_judge`, `run_notify`) do the work; the Celery tasks only
add retry policy, so tests can run the same code in-process or through a real worker.
"""
from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from rules.errors import InputError
from store import repo
from store.blobs import BlobStore
from store.db import session_scope
from store.models import (
    ERROR_INFRA, JOB_DONE, JOB_FAILED, JOB_RUNNING, JUDGING, QUEUED, RECEIVED,
    REPORTED, RUNNING, TERMINAL, VALIDATING, AuditJob, Run, Submission,
)
from store.settings import Settings, get_settings

from .app import TASK_AUDIT, TASK_JUDGE, TASK_NOTIFY, TASK_REPRODUCE, celery_app

log = logging.getLogger(__name__)


class InfraError(Exception):
    """An infrastructure fault with a stable reason code (retried; not the submitter's fault)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _infra_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [InfraError, OperationalError, InterfaceError, PoolTimeout,
                                        OSError, ConnectionError, TimeoutError]
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
        types.append(KombuOperationalError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import redis.exceptions
        types.append(redis.exceptions.ConnectionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


INFRA_ERRORS = _infra_types()


def infra_code(exc: BaseException) -> str:
    if isinstance(exc, InfraError):
        return exc.code
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return "database_unavailable"
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        return "storage_error"
    return "broker_unavailable" if "kombu" in type(exc).__module__ or "redis" in type(exc).__module__ \
        else "infra_error"


def _worker_name() -> str:
    return f"{socket.gethostname()}:{__import__('os').getpid()}"


def blob_store(settings: Settings) -> BlobStore:
    assert settings.blob_dir is not None
    return BlobStore(settings.blob_dir)


# ---------------------------------------------------------------------------------------------
# Static audit
# ---------------------------------------------------------------------------------------------


def run_audit(submission_id: str, settings: Settings | None = None,
              worker_name: str | None = None) -> str:
    """Intake + static audit + (without reproduction) judging of one submission.
    Returns what happened, as a short word (for logs and tests)."""
    settings = settings or get_settings()
    url = settings.database_url
    worker_name = worker_name or _worker_name()

    # 1. claim the job and enter `validating`
    with session_scope(url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            log.warning("audit of unknown submission %s ignored", submission_id)
            return "missing"
        if sub.state == REPORTED:          # verdict stored, died before the final state
            job = repo.latest_job(s, sub.id, "static")
            _finalize(s, sub, job)
            return "finalized"
        if sub.state in TERMINAL and sub.state != ERROR_INFRA:
            return f"already_{sub.state}"
        if sub.state in (QUEUED, RUNNING):  # static part done; a reproduction is under way
            return "reproducing"
        job = repo.latest_job(s, sub.id, "static")
        if job is None or job.state not in ("queued", JOB_RUNNING):
            job = repo.create_job(s, sub, "static", deadline_s=settings.static_deadline_s)
        if not repo.claim_job(s, job.id, worker=worker_name,
                              stale_after_s=settings.job_stale_after_s):
            return "busy"
        again = job.attempts > 1 or sub.state not in (RECEIVED,)
        if sub.state != VALIDATING or again:
            repo.transition(s, sub, VALIDATING, "audit_restarted" if again else "audit_started",
                            f"attempt {job.attempts} on {worker_name}")
        job_id, attempt = job.id, job.attempts
        source = {"kind": sub.source_kind, "folder_key": sub.folder_key, "repo": sub.repo,
                  "pr": sub.pr, "ref": sub.ref, "path": sub.path, "head_sha": sub.head_sha}
        policy = sub.policy or settings.default_policy
        reproduce = dict(sub.reproduce or {})

    _pause_for_fault_injection(settings, job_id)

    try:
        # 2. materialize the records folder (GitHub: fetch it once, then it is a blob like uploads)
        folder = _folder(settings, submission_id, source)
        # 3. the rules (pure: they parse, never execute)
        verdict = _static_verdict(folder, policy)
    except InputError as exc:
        with session_scope(url) as s:
            sub = repo.get_submission(s, submission_id)
            job = s.get(AuditJob, job_id)
            if sub is not None and sub.state == VALIDATING:
                repo.transition(s, sub, "failed", "input_error", exc.message, error_code=exc.code)
            if job is not None:
                repo.finish_job(s, job, JOB_FAILED, error_code=exc.code, error=exc.message)
        return "input_error"

    # 4. store the verdict and move on (to the final state, or to the reproduction). Finishing
    # the job is a conditional update on (worker, attempt): if a slow holder and a takeover both
    # get here, exactly one writes.
    reproduce_job: int | None = None
    with session_scope(url) as s:
        if not repo.finish_claimed_job(s, job_id, worker=worker_name, attempt=attempt):
            return "superseded"            # cancelled, or taken over by another delivery
        sub = repo.get_submission(s, submission_id)
        if sub is None or sub.state != VALIDATING:
            s.rollback()
            return "superseded"
        repo.transition(s, sub, JUDGING, "static_rules", f"{len(verdict.get('rules', []))} rules run")
        repo.save_verdict(s, sub, verdict, basis="static")
        if reproduce.get("seeds"):
            seeds, nproc = list(reproduce["seeds"]), int(reproduce.get("nproc", 1))
            repo.transition(s, sub, QUEUED, "reproduction_queued",
                            f"seeds {seeds} on {nproc} process(es)")
            reproduce_job = _create_reproduce_job(s, sub, seeds, nproc, settings)
            outcome = "reproduction_queued"
        else:
            _finalize(s, sub, None)
            outcome = sub.state
        is_github = sub.source_kind == "github"
    if reproduce_job is not None:
        _publish_reproduce(submission_id, reproduce_job, settings)
    elif is_github:
        _enqueue_notify(submission_id)
    return outcome


def _finalize(s, sub: Submission, job: AuditJob | None) -> None:
    """judging → reported → passed | failed | needs_review (the verdict is already stored)."""
    v = repo.get_verdict(s, sub.id)
    if v is None:
        raise InfraError("verdict_missing", "the verdict was not found when finalizing")
    if sub.state == JUDGING:
        repo.transition(s, sub, REPORTED, "verdict_saved", f"{v.basis} verdict v{v.version}")
    target = repo.OUTCOME_STATE.get(v.outcome)
    if target is None:
        raise InfraError("bad_verdict", f"unknown verdict outcome {v.outcome!r}")
    repo.transition(s, sub, target, f"verdict_{v.outcome}", f"verdict: {v.outcome}")
    if job is not None and job.state == JOB_RUNNING:
        repo.finish_job(s, job, JOB_DONE)


def _pause_for_fault_injection(settings: Settings, job_id: int) -> None:
    """Crash tests only (PGOLF_AUDIT_FAULT_INJECTION_PAUSE_S): hold the claimed job, beating."""
    end = time.monotonic() + settings.fault_injection_pause_s
    while time.monotonic() < end:
        time.sleep(min(0.25, max(0.0, end - time.monotonic())))
        with session_scope(settings.database_url) as s:
            repo.heartbeat(s, job_id)


def _folder(settings: Settings, submission_id: str, source: dict[str, Any]) -> Path:
    blobs = blob_store(settings)
    if source["folder_key"]:
        try:
            return blobs.path(source["folder_key"])
        except FileNotFoundError as exc:
            raise InfraError("blob_missing",
                             f"the stored folder {source['folder_key']} is missing") from exc
    if source["kind"] != "github":
        raise InfraError("blob_missing", "the submission has no stored folder")
    return _fetch_github(settings, submission_id, source, blobs)


def _fetch_github(settings: Settings, submission_id: str, source: dict[str, Any],
                  blobs: BlobStore) -> Path:
    """Download the PR's (or ref's) records folder through worker.github and store it."""
    try:
        from . import github as gh_mod
    except ImportError as exc:
        raise InfraError("github_unavailable", "GitHub intake is not installed") from exc
    from .intake import store_folder

    with tempfile.TemporaryDirectory(prefix="pgolf-gh-") as tmp:
        dest = Path(tmp) / "folder"
        try:
            with gh_mod.GitHubClient.from_settings(settings) as client:
                if source["pr"]:
                    fetched = gh_mod.fetch_pr_folder(source["repo"], int(source["pr"]),
                                                     source["head_sha"], dest, client=client)
                else:
                    path = str(source["path"] or "").strip("/")
                    parts = path.split("/")
                    folder = gh_mod.RecordsFolder(path=path, name=parts[-1],
                                                  track=parts[-2] if len(parts) > 1 else "")
                    fetched = client.download_folder(source["repo"], folder,
                                                     source["ref"] or "HEAD", dest)
        except gh_mod.GitHubError as exc:
            if exc.code in ("github_unavailable",) or (exc.status or 0) >= 500 \
                    or exc.status in (401, 403, 429):
                raise InfraError(exc.code, exc.message) from exc
            raise InputError(exc.code, exc.message) from exc
        # keep the PR's own names (track folder and records folder) in the stored path: the
        # rules read both from it, as they do for a checkout of the repository
        named = (Path(tmp) / "named" / BlobStore.safe_name(fetched.folder.track or "", "records")
                 / BlobStore.safe_name(fetched.folder.name))
        named.parent.mkdir(parents=True, exist_ok=True)
        fetched.dest.rename(named)
        stored = store_folder(blobs, named)
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is not None:
            sub.folder_key, sub.content_sha256 = stored.folder_key, stored.sha256
            sub.head_sha = sub.head_sha or fetched.head_sha
            sub.name = sub.name or stored.name
    return blobs.path(stored.folder_key)


def _static_verdict(folder: Path, policy: str | None) -> dict[str, Any]:
    from rules.engine import audit, context_for

    return audit(context_for(folder, policy)).to_json()


# ---------------------------------------------------------------------------------------------
# Reproduction hooks (the runner lives in worker/reproduce.py)
# ---------------------------------------------------------------------------------------------


def start_reproduction(submission_id: str, seeds: list[int], nproc: int = 1, *,
                       settings: Settings | None = None) -> int:
    """Queue a reproduction of `seeds` for a submission whose static verdict is stored: one
    `reproduce` job, one run row per seed, one `pgolf.reproduce` message per seed on the GPU
    queue (the runner is `worker.reproduce.run_seed`, imported lazily by the GPU task).
    Returns the job id."""
    settings = settings or get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            raise KeyError(submission_id)
        job_id = _create_reproduce_job(s, sub, seeds, nproc, settings)
    _publish_reproduce(submission_id, job_id, settings)
    return job_id


def _create_reproduce_job(s, sub: Submission, seeds: list[int], nproc: int,
                          settings: Settings) -> int:
    job = repo.create_job(s, sub, "reproduce", deadline_s=settings.reproduce_deadline_s,
                          params={"seeds": list(seeds), "nproc": nproc})
    for seed in seeds:
        repo.create_run(s, sub, seed=seed, nproc=nproc, job=job,
                        log_key=BlobStore.log_key(sub.id, f"seed-{seed}"))
    return job.id


def _publish_reproduce(submission_id: str, job_id: int, settings: Settings) -> None:
    """One message per seed; a refused publish leaves the job unpublished for the sweeper."""
    from .enqueue import EnqueueError, enqueue_reproduce

    with session_scope(settings.database_url) as s:
        job = s.get(AuditJob, job_id)
        params = dict(job.params or {}) if job else {}
    for seed in params.get("seeds", []):
        try:
            enqueue_reproduce(submission_id, seed, int(params.get("nproc", 1)), job_id=job_id,
                              settings=settings)
        except EnqueueError as exc:
            log.warning("reproduction of %s seed %s not published yet: %s", submission_id, seed, exc)
            return


def run_reproduce_seed(submission_id: str, seed: int | None, nproc: int, job_id: int) -> str:
    """One seed on this GPU worker, delegated to `worker.reproduce.run_seed`. Around it: the
    submission enters `running`, and the job heart-beats while the seed runs, so the sweeper can
    tell a long healthy run from a dead worker. Without `worker.reproduce` the run is recorded
    as an infrastructure error (this worker cannot reproduce)."""
    try:
        from . import reproduce as rep
        run_seed = getattr(rep, "run_seed")
    except (ImportError, AttributeError):
        run_seed = None
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        job = s.get(AuditJob, job_id)
        if sub is None or job is None:
            return "missing"
        if sub.state in TERMINAL or job.state not in ("queued", JOB_RUNNING):
            return f"already_{sub.state}"
        if run_seed is None:
            for run in sub.runs:
                if run.job_id == job_id and run.seed == seed and run.status == "queued":
                    repo.finish_run(s, run, status="infra_error",
                                    error="reproduction is not available on this worker")
            repo.finish_job(s, job, JOB_FAILED, error_code="reproduction_unavailable",
                            error="reproduction is not available on this worker")
            if repo.can_transition(sub.state, ERROR_INFRA):
                repo.transition(s, sub, ERROR_INFRA, "reproduction_unavailable",
                                "reproduction is not available on this worker; not counted "
                                "against the submission")
            return "reproduction_unavailable"
        if job.state == "queued":
            repo.claim_job(s, job.id, worker=_worker_name(), stale_after_s=settings.job_stale_after_s)
        else:
            repo.heartbeat(s, job.id)
        if sub.state == QUEUED:
            repo.transition(s, sub, RUNNING, "run_started", f"seed {seed} on {nproc} process(es)")
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(settings, job_id, stop), daemon=True)
    beat.start()
    try:
        return str(run_seed(submission_id, seed, nproc, job_id))
    finally:
        stop.set()
        beat.join(timeout=5)


def _beat(settings: Settings, job_id: int, stop: threading.Event) -> None:
    interval = max(1.0, settings.job_stale_after_s / 4)
    while not stop.wait(interval):
        try:
            with session_scope(settings.database_url) as s:
                repo.heartbeat(s, job_id)
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
            log.warning("heartbeat of job %s failed: %s", job_id, exc)


# ---------------------------------------------------------------------------------------------
# Judging with reproduced runs
# ---------------------------------------------------------------------------------------------


def runs_as_evidence(settings: Settings, runs: list[Run]) -> list[Any]:
    """The store's runs as `rules.context.RunEvidence` (log parsed, trace loaded)."""
    import json

    from rules.context import RunEvidence

    blobs = blob_store(settings)
    out = []
    for r in runs:
        parsed, log_file, trace, trace_file = None, None, [], None
        if r.log_key and blobs.exists(r.log_key):
            log_file = str(blobs.path(r.log_key))
            from rules.logs import parse_log_bytes
            parsed = parse_log_bytes(blobs.get_bytes(r.log_key), Path(r.log_key).name)
        if r.trace_key and blobs.exists(r.trace_key):
            trace_file = str(blobs.path(r.trace_key))
            for line in blobs.path(r.trace_key).read_text("utf-8", "replace").splitlines():
                try:
                    trace.append(json.loads(line))
                except ValueError:
                    continue
        gpu = dict(r.gpu or {})
        sandbox = gpu.get("sandbox") if isinstance(gpu.get("sandbox"), dict) else {}
        out.append(RunEvidence(seed=r.seed, status=r.status, log_file=log_file, parsed=parsed,
                               wall_s=dict(r.timings or {}), artifact_bytes=r.artifact_bytes,
                               gpu=gpu, trace=trace, trace_file=trace_file,
                               network_isolated=sandbox.get("network_isolated"),
                               calibration=gpu.get("calibration")))
    return out


def run_judge(submission_id: str, settings: Settings | None = None) -> str:
    """Re-run the rules with the reproduced runs as evidence, store that verdict, finalize."""
    settings = settings or get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            return "missing"
        if sub.state == REPORTED:
            _finalize(s, sub, None)
            return f"already_{sub.state}"
        if sub.state in TERMINAL and not (sub.state == ERROR_INFRA and sub.runs):
            return f"already_{sub.state}"
        if sub.state in (QUEUED, RUNNING, ERROR_INFRA):   # error_infra: a retried judging
            repo.transition(s, sub, JUDGING, "runs_finished", f"{len(sub.runs)} run(s)")
        folder_key, policy = sub.folder_key, sub.policy or settings.default_policy
        runs = list(sub.runs)
    from rules.engine import audit, context_for

    folder = blob_store(settings).path(folder_key) if folder_key else None
    if folder is None:
        raise InfraError("blob_missing", "the submission has no stored folder")
    verdict = audit(context_for(folder, policy, runs_as_evidence(settings, runs))).to_json()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None or sub.state != JUDGING:
            return "superseded"
        repo.save_verdict(s, sub, verdict, basis="reproduced")
        _finalize(s, sub, None)
        outcome, is_github = sub.state, sub.source_kind == "github"
    if is_github:
        _enqueue_notify(submission_id)
    return outcome


# ---------------------------------------------------------------------------------------------
# Notify (GitHub commit status + sticky comment, in worker/notify.py)
# ---------------------------------------------------------------------------------------------


def run_notify(submission_id: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            return {"skipped": "unknown submission"}
        if sub.source_kind != "github":
            return {"skipped": "not from GitHub"}
    try:
        from .notify import notify_github
    except ImportError:
        return {"skipped": "GitHub notification is not installed"}
    return notify_github(submission_id, settings=settings)


def _enqueue_notify(submission_id: str) -> None:
    try:
        celery_app.send_task(TASK_NOTIFY, args=[submission_id],
                             queue=get_settings().queue_audit)
    except Exception as exc:  # noqa: BLE001 - a lost notification never fails the audit
        log.warning("notify for %s not published: %s", submission_id, exc)


# ---------------------------------------------------------------------------------------------
# Celery tasks: retry policy around the functions above
# ---------------------------------------------------------------------------------------------


def _record_infra_error(settings: Settings, submission_id: str, exc: BaseException,
                        *, final: bool) -> None:
    """Best effort (the database may be what failed): submission → error_infra, job back to the
    queue for the retry (or failed when retries are exhausted)."""
    code = infra_code(exc)
    msg = (f"infrastructure error ({code}): {type(exc).__name__}: {str(exc)[:300]}; "
           + ("retries exhausted — an operator must re-run it" if final else "retrying")
           + "; not counted against the submission")
    try:
        with session_scope(settings.database_url) as s:
            sub = repo.get_submission(s, submission_id)
            if sub is None:
                return
            job = repo.latest_job(s, submission_id, "static")
            if sub.state not in TERMINAL and repo.can_transition(sub.state, ERROR_INFRA):
                repo.transition(s, sub, ERROR_INFRA, code, msg)
            if job is not None and job.state == JOB_RUNNING:
                if final:
                    repo.finish_job(s, job, JOB_FAILED, error_code=code, error=msg)
                else:
                    repo.requeue_job(s, job, error_code=code, error=msg)
    except Exception:  # noqa: BLE001
        log.exception("could not record the infrastructure error of %s", submission_id)


def _record_internal_error(settings: Settings, submission_id: str, exc: BaseException) -> None:
    msg = ("internal error in the auditor; the operator has the traceback. "
           "Not counted against the submission.")
    try:
        with session_scope(settings.database_url) as s:
            sub = repo.get_submission(s, submission_id)
            if sub is None:
                return
            if sub.state not in TERMINAL and repo.can_transition(sub.state, ERROR_INFRA):
                repo.transition(s, sub, ERROR_INFRA, "internal_error", msg)
            job = repo.latest_job(s, submission_id, "static")
            if job is not None and job.state == JOB_RUNNING:
                repo.finish_job(s, job, JOB_FAILED, error_code="internal_error",
                                error=f"{type(exc).__name__}: {str(exc)[:500]}")
    except Exception:  # noqa: BLE001
        log.exception("could not record the internal error of %s", submission_id)


def _guarded(task, fn, submission_id: str, *args: Any) -> Any:
    settings = get_settings()
    try:
        return fn(submission_id, *args)
    except INFRA_ERRORS as exc:
        final = task.request.retries >= settings.task_max_retries
        log.warning("%s(%s): infrastructure error %s (retry %d/%d)", task.name, submission_id,
                    exc, task.request.retries, settings.task_max_retries)
        _record_infra_error(settings, submission_id, exc, final=final)
        if final:
            return "error_infra"
        raise task.retry(exc=exc, countdown=settings.task_retry_backoff_s * 2 ** task.request.retries,
                         max_retries=settings.task_max_retries)
    except Exception as exc:  # noqa: BLE001
        log.exception("%s(%s): internal error", task.name, submission_id)
        _record_internal_error(settings, submission_id, exc)
        return "internal_error"


@celery_app.task(name=TASK_AUDIT, bind=True)
def audit_task(self, submission_id: str) -> str:
    return _guarded(self, run_audit, submission_id)


@celery_app.task(name=TASK_JUDGE, bind=True)
def judge_task(self, submission_id: str) -> str:
    return _guarded(self, run_judge, submission_id)


@celery_app.task(name=TASK_NOTIFY, bind=True, max_retries=3)
def notify_task(self, submission_id: str) -> Any:
    try:
        return run_notify(submission_id)
    except INFRA_ERRORS as exc:
        raise self.retry(exc=exc, countdown=5 * 2 ** self.request.retries)


@celery_app.task(name=TASK_REPRODUCE, bind=True)
def reproduce_task(self, submission_id: str, seed: int | None, nproc: int, job_id: int) -> str:
    return run_reproduce_seed(submission_id, seed, nproc, job_id)


