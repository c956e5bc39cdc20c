"""Prometheus metrics. Per-app registry (tests build many apps). Store-derived figures are read
at scrape time, so every API process reports the same numbers whichever worker did the work:

- pgolf_audit_submissions{state}            submissions by state
- pgolf_audit_jobs_queued{kind}             jobs waiting (store view)
- pgolf_audit_broker_queue_depth{queue}     messages in the broker queue (Redis only)
- pgolf_audit_audit_duration_seconds        histogram of finished static audits (claim → done)
- pgolf_audit_http_request_duration_seconds histogram per method, route and status (this process)
"""
from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select

from store import repo
from store.models import JOB_DONE, STATES, AuditJob

log = logging.getLogger(__name__)
AUDIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class StoreCollector:
    def __init__(self, app):  # noqa: ANN001
        self.app = app

    def collect(self):  # noqa: ANN201
        try:
            with self.app.state.sessionmaker() as s:
                counts = repo.counts_by_state(s)
                queued = repo.queued_job_counts(s)
                dur = AuditJob.duration_s
                cols = [func.sum(case((dur <= b, 1), else_=0)) for b in AUDIT_BUCKETS]
                row = s.execute(select(func.count(dur), func.coalesce(func.sum(dur), 0.0), *cols)
                                .where(AuditJob.kind == "static", AuditJob.state == JOB_DONE,
                                       dur.is_not(None))).one()
        except Exception as exc:  # noqa: BLE001 - a scrape never fails because the DB is down
            log.warning("metrics: store unavailable: %s", exc)
            return
        g = GaugeMetricFamily("pgolf_audit_submissions", "Submissions by state", labels=["state"])
        for state in STATES:
            g.add_metric([state], counts.get(state, 0))
        yield g
        q = GaugeMetricFamily("pgolf_audit_jobs_queued", "Jobs waiting for a worker", labels=["kind"])
        for kind in ("static", "reproduce"):
            q.add_metric([kind], queued.get(kind, 0))
        yield q
        total, total_sum = int(row[0] or 0), float(row[1] or 0.0)
        buckets = [(str(b), int(n or 0)) for b, n in zip(AUDIT_BUCKETS, row[2:])]
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily("pgolf_audit_audit_duration_seconds",
                                    "Static audit duration (claim to verdict)",
                                    buckets=buckets, sum_value=total_sum)
        depth = self._broker_depth()
        if depth:
            d = GaugeMetricFamily("pgolf_audit_broker_queue_depth", "Messages in the broker queue",
                                  labels=["queue"])
            for name, n in depth.items():
                d.add_metric([name], n)
            yield d

    def _broker_depth(self) -> dict[str, int]:
        settings = self.app.state.settings
        if not settings.broker_is_redis:
            return {}
        try:
            import redis
            client = redis.Redis.from_url(settings.broker_url, socket_timeout=1,
                                          socket_connect_timeout=1)
            try:
                return {q: int(client.llen(q)) for q in (settings.queue_audit, settings.queue_gpu)}
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: broker unavailable: %s", exc)
            return {}


class Metrics:
    def __init__(self, app):  # noqa: ANN001
        self.registry = CollectorRegistry()
        self.http = Histogram("pgolf_audit_http_request_duration_seconds", "HTTP request latency",
                              ["method", "route", "status"], buckets=HTTP_BUCKETS,
                              registry=self.registry)
        self.registry.register(StoreCollector(app))


class LatencyMiddleware:
    """Pure ASGI middleware (cheap on the hot path): observes every HTTP request's latency,
    labelled by the matched route template (not the raw path, to bound label values)."""

    def __init__(self, app, metrics: Metrics):  # noqa: ANN001
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def _send(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http.labels(scope.get("method", ""), path, str(status[0])).observe(
                time.perf_counter() - start)
