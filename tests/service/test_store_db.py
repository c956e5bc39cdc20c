"""Migrations from an empty database, on SQLite and PostgreSQL, agree with the models."""
from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from store.db import get_engine, migrate
from store.models import Base

TABLES = {"submissions", "audit_jobs", "runs", "verdicts", "state_transitions", "api_tokens",
          "webhook_deliveries"}


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    engine = get_engine(db_url)
    assert not (TABLES & set(inspect(engine).get_table_names()))
    migrate(db_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"


def test_migrations_match_models(db_url: str) -> None:
    migrate(db_url)
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_is_idempotent_and_safe_concurrently(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(db_url)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    migrate(db_url)
    assert TABLES <= set(inspect(get_engine(db_url)).get_table_names())


def test_downgrade_to_base_removes_tables(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS_DIR, normalize_url

    migrate(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with get_engine(db_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert not (TABLES & set(inspect(get_engine(normalize_url(db_url))).get_table_names()))


def test_sqlite_uses_wal(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_upgrade_command(tmp_path) -> None:
    """`python -m store.db upgrade` migrates the database the environment names."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_AUDIT_")}
    env.update(PGOLF_AUDIT_HOME=str(tmp_path), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-m", "store.db", "upgrade"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "migrated sqlite:///" in out.stdout
    assert TABLES <= set(inspect(get_engine(f"sqlite:///{tmp_path / 'audit.db'}")).get_table_names())
