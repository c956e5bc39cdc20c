"""`pgolf-audit worker` — a Celery worker against the configured broker.

  pgolf-audit worker [--queues audit,gpu] [--concurrency N] [--pool prefork|solo|threads]
                     [--beat] [--loglevel info] [--hostname NAME]

Queue names are the logical ones (`audit`, `gpu`), mapped to the configured names
(PGOLF_AUDIT_QUEUE_AUDIT / _GPU). A worker that serves only `gpu` runs one task at a time
(one reproduction owns every GPU of the node). `--beat` also runs the sweeper's schedule inside
this worker (embedded mode); in compose a single worker does it.
"""
from __future__ import annotations

import argparse
import os
import socket

from store.db import migrate
from store.settings import get_settings


def build_argv(args: argparse.Namespace) -> list[str]:
    settings = get_settings()
    names = {"audit": settings.queue_audit, "gpu": settings.queue_gpu}
    logical = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in logical if q not in names]
    if unknown:
        raise SystemExit(f"pgolf-audit worker: unknown queue(s) {unknown}; use audit and/or gpu")
    queues = [names[q] for q in logical]
    concurrency = args.concurrency
    if logical == ["gpu"]:
        concurrency = 1
    hostname = args.hostname or f"pgolf-{'-'.join(logical)}@{socket.gethostname()}-{os.getpid()}"
    argv = ["worker", f"--queues={','.join(queues)}", f"--loglevel={args.loglevel}",
            f"--pool={args.pool}", f"--hostname={hostname}", "--without-gossip", "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if args.beat:
        argv += ["--beat", f"--schedule={settings.home / 'celerybeat-schedule'}"]
    return argv


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgolf-audit worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", default="audit,gpu")
    parser.add_argument("--concurrency", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    parser.add_argument("--beat", action="store_true", help="also run the sweeper schedule")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--no-migrate", action="store_true",
                        help="do not upgrade the database schema at start")
    args = parser.parse_args(argv)
    settings = get_settings()
    settings.ensure_dirs()
    if not args.no_migrate:
        migrate(settings.database_url)
    from .app import celery_app

    celery_app.worker_main(build_argv(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
