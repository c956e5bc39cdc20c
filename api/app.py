"""The FastAPI application: `create_app(settings=None)`.

OpenAPI at /docs. Routers: submissions, health/metrics, and the GitHub webhook
(`api.routes.webhooks`, included when present). Every error is a `{"code", "message"}` body.
"""
from __future__ import annotations

import gc
import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker

from store.blobs import BlobStore
from store.db import get_engine, migrate
from store.settings import Settings, get_settings

from .errors import install_error_handlers
from .metrics import LatencyMiddleware, Metrics
from .routes import health, submissions
from .verdict_cache import VerdictCache, VerdictFastPath

log = logging.getLogger("api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        if settings.auto_migrate:
            migrate(settings.database_url)
        # everything imported so far lives as long as the process: keep it out of the GC's
        # scans (shorter collection pauses under load)
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(title="pgolf-audit", version="0.1.0", lifespan=lifespan,
                  description="Compliance auditing and reproduction for OpenAI Parameter Golf "
                              "submissions.")
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker(bind=get_engine(settings.database_url),
                                          expire_on_commit=False)
    assert settings.blob_dir is not None
    app.state.blobs = BlobStore(settings.blob_dir)
    app.state.verdict_cache = VerdictCache(settings.verdict_cache_ttl_s)
    app.state.metrics = Metrics(app)
    install_error_handlers(app)
    app.include_router(submissions.router)
    app.include_router(health.router)
    _include_webhooks(app, settings)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    # outermost: cached public verdicts are answered before anything else runs
    verdict_route = "/v1/submissions/{submission_id}/verdict"
    app.add_middleware(VerdictFastPath, cache=app.state.verdict_cache, settings=settings,
                       observe=lambda s, status: app.state.metrics.http.labels(
                           "GET", verdict_route, str(status)).observe(s))
    return app


def _include_webhooks(app: FastAPI, settings: Settings) -> None:
    """The webhook router is a separate module; wire its settings-bound dependencies to this
    app's settings (so an app built with explicit settings does not read the environment)."""
    try:
        mod = importlib.import_module("api.routes.webhooks")
    except ImportError:
        log.info("GitHub webhook route not installed")
        return
    app.include_router(mod.router)
    if hasattr(mod, "get_webhook_secret"):
        app.dependency_overrides[mod.get_webhook_secret] = lambda: settings.github_webhook_secret
    intake_cls = getattr(mod, "StoreIntake", None)
    if hasattr(mod, "get_intake") and intake_cls is not None:
        if hasattr(intake_cls, "_enqueue") and hasattr(intake_cls, "_mark_submission"):
            class AppIntake(intake_cls):  # type: ignore[misc, valid-type]
                """The webhook intake bound to this app's settings for the queue too (the
                module's default publishes with the process-wide settings)."""

                def _enqueue(self, submission_id: str) -> None:
                    from worker.enqueue import enqueue_audit
                    enqueue_audit(submission_id, settings=settings)
                    self._mark_submission(submission_id)

            intake_cls = AppIntake
        app.dependency_overrides[mod.get_intake] = lambda: intake_cls(settings.database_url)
