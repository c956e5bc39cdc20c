"""/healthz (database + broker reachable) and /metrics (Prometheus text)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["operations"])


def _check_db(request: Request) -> str:
    try:
        with request.app.state.sessionmaker() as s:
            s.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


def _check_broker(request: Request) -> str:
    settings = request.app.state.settings
    try:
        if settings.broker_is_redis:
            import redis
            client = redis.Redis.from_url(settings.broker_url, socket_timeout=2,
                                          socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        else:
            from kombu import Connection
            with Connection(settings.broker_url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


@router.get("/healthz", summary="Liveness and dependencies (database, broker)")
async def healthz(request: Request) -> JSONResponse:
    checks = {"database": await run_in_threadpool(_check_db, request),
              "broker": await run_in_threadpool(_check_broker, request)}
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    failed = ", ".join(k for k, v in checks.items() if v != "ok")
    return JSONResponse({"code": "unhealthy", "message": f"Not reachable: {failed}.",
                         "checks": checks}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
