"""`pgolf-audit serve` — the API plus a worker, on embedded defaults (no servers needed).

  pgolf-audit serve [--host 127.0.0.1] [--port 8000] [--workers 1] [--no-worker]

Embedded defaults: SQLite under $PGOLF_AUDIT_HOME (~/.pgolf-audit), the blob directory beside it,
and a Celery broker on a second SQLite file (kombu's SQLAlchemy transport), so a fresh machine
needs nothing running. The worker is a child process (`pgolf-audit worker --beat`, both queues)
stopped when the API stops. With PGOLF_AUDIT_DATABASE_URL / _BROKER_URL set, the same command
serves against PostgreSQL / Redis; `--no-worker` serves the API alone (compose runs workers
as their own services).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from store.db import migrate
from store.settings import get_settings


def start_worker(extra: list[str] | None = None) -> subprocess.Popen:
    """The worker child: its own session so a Ctrl-C to the API does not race its shutdown."""
    cmd = [sys.executable, "-m", "worker.cli", "--queues", "audit,gpu", "--beat", "--no-migrate",
           "--concurrency", "2", "--loglevel", "warning", *(extra or [])]
    return subprocess.Popen(cmd, start_new_session=True)


def stop_worker(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)      # warm shutdown: unfinished tasks go back
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgolf-audit serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--no-worker", action="store_true", help="serve the API only")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.database_url)          # once, before any child starts
    os.environ["PGOLF_AUDIT_AUTO_MIGRATE"] = "false"
    worker = None if args.no_worker else start_worker()
    print(f"pgolf-audit: serving on http://{args.host}:{args.port} (docs at /docs); "
          f"home {settings.home}" + ("" if worker is None else f"; worker pid {worker.pid}"),
          flush=True)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with this handler that
    # becomes SystemExit, so the `finally` below still stops the worker child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        import uvicorn
        uvicorn.run("api.app:create_app", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, access_log=False)
    finally:
        if worker is not None:
            stop_worker(worker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
