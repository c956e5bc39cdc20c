"""Fixtures for the service tests: real SQLite and PostgreSQL stores, real Celery workers as
subprocesses against real brokers (this machine's Redis, or the embedded SQLite broker), archive
builders. Tests needing Redis/PostgreSQL skip with the reason when the service is unreachable
(scripts/services.sh starts both in CI)."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.db import dispose_engines, migrate, session_scope
from store.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PGOLF_SHARED", REPO.parent / "shared")).resolve()
RECORDS = SHARED / "fixtures" / "records"
PG_ADMIN_URL = os.environ.get("PGOLF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("PGOLF_TEST_REDIS_PORT", "6379"))
REDIS_DB = 13          # a db number of its own; queue names get a random suffix per session
PYTHON = sys.executable


# ---------------------------------------------------------------------------------------------
# records folders and archives
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def records_dir() -> Path:
    if not RECORDS.is_dir():
        pytest.skip(f"../shared fixtures not found at {RECORDS}")
    return RECORDS


@pytest.fixture(scope="session")
def record_folders(records_dir: Path) -> list[Path]:
    """A few real records folders (small ones first)."""
    folders = sorted((p for p in (records_dir / "track_10min_16mb").iterdir() if p.is_dir()),
                     key=lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
    return folders


def zip_folder(folder: Path, *, top: str | None = None) -> bytes:
    buf = io.BytesIO()
    top = folder.name if top is None else top
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                rel = f.relative_to(folder).as_posix()
                zf.write(f, f"{top}/{rel}" if top else rel)
    return buf.getvalue()


def tgz_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return buf.getvalue()


def zip_members(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def variant_zip(folder: Path, marker: str) -> bytes:
    """The folder's archive with one extra note file: different content, so a new submission."""
    buf = io.BytesIO(zip_folder(folder))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(f"{folder.name}/NOTES.txt", f"variant {marker}\n")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# databases
# ---------------------------------------------------------------------------------------------


def _pg_available() -> str | None:
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import psycopg
    name = f"pgolf_audit_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """An empty schema of the session database, as a URL (search_path set to it)."""
    import psycopg
    schema = f"t_{uuid.uuid4().hex[:10]}"
    raw = pg_database.replace("+psycopg", "")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{pg_database}?options=-csearch_path%3D{schema}"
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    """An empty database of each kind (the store must behave the same on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def migrated(db_url: str) -> str:
    migrate(db_url)
    return db_url


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


def make_settings(home: Path, **over) -> Settings:
    base = dict(home=home, verdict_cache_ttl_s=0.0, task_retry_backoff_s=0.2)
    base.update(over)
    return Settings(**base)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to see `settings` (what compose would set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_AUDIT_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"PGOLF_AUDIT_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings in a temp home (SQLite store + SQLite broker: both real)."""
    s = make_settings(tmp_path / "home")
    s.ensure_dirs()
    migrate(s.database_url)
    return s


@pytest.fixture
def session(settings: Settings):
    with session_scope(settings.database_url) as s:
        yield s


# ---------------------------------------------------------------------------------------------
# Redis and workers
# ---------------------------------------------------------------------------------------------


def redis_reachable(port: int = REDIS_PORT) -> bool:
    try:
        with socket.create_connection((REDIS_HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not redis_reachable():
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def unique_queues() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {"queue_audit": f"audit-{suffix}", "queue_gpu": f"gpu-{suffix}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """`python -m worker.cli` in its own process group (so kill -9 takes the whole pool)."""

    def __init__(self, settings: Settings, *, queues: str = "audit", pool: str = "solo",
                 concurrency: int = 1, log: Path | None = None, beat: bool = False):
        self.settings, self.queues, self.pool, self.concurrency = settings, queues, pool, concurrency
        self.beat = beat
        self.log = log or (settings.home / f"worker-{uuid.uuid4().hex[:6]}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "worker.cli", "--queues", self.queues, "--pool", self.pool,
             "--concurrency", str(self.concurrency), "--loglevel", "info", "--no-migrate",
             *(["--beat"] if self.beat else [])],
            cwd=REPO, env=settings_env(self.settings), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def _start(settings: Settings, **kw) -> WorkerProcess:
        w = WorkerProcess(settings, **kw).start()
        started.append(w)
        return w

    yield _start
    for w in started:
        w.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.1, diagnose: Callable[[], str] | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def purge_redis(redis_url: str, *queues: str) -> None:
    import redis
    client = redis.Redis.from_url(redis_url)
    try:
        for q in queues:   # the queue and kombu's routing keys for it
            client.delete(q, f"_kombu.binding.{q}", f"_kombu.binding_permanent.{q}")
    finally:
        client.close()
