"""The one settings object: embedded defaults under the home dir, everything from PGOLF_AUDIT_*."""
from __future__ import annotations

from pathlib import Path

from store.settings import Settings


def test_embedded_defaults_live_under_home(tmp_path: Path, monkeypatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("PGOLF_AUDIT_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("PGOLF_AUDIT_HOME", str(tmp_path / "h"))
    s = Settings()
    assert s.home == tmp_path / "h"
    assert s.database_url == f"sqlite:///{tmp_path / 'h' / 'audit.db'}"
    assert s.blob_dir == tmp_path / "h" / "blobs"
    assert s.broker_url.startswith("sqla+sqlite:///") and str(tmp_path / "h") in s.broker_url
    assert not s.broker_is_redis
    assert s.reports_public is True
    # the broker's redelivery timeout must exceed the longest job (service.md §5)
    assert s.redis_visibility_timeout_s > s.reproduce_deadline_s


def test_environment_overrides(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PGOLF_AUDIT_HOME", str(tmp_path))
    monkeypatch.setenv("PGOLF_AUDIT_DATABASE_URL", "postgresql://u@db/x")
    monkeypatch.setenv("PGOLF_AUDIT_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("PGOLF_AUDIT_REPORTS_PUBLIC", "false")
    monkeypatch.setenv("PGOLF_AUDIT_MAX_UPLOAD_BYTES", "1234")
    s = Settings()
    assert s.database_url == "postgresql://u@db/x"
    assert s.broker_is_redis and s.reports_public is False and s.max_upload_bytes == 1234


def test_documented(tmp_path: Path) -> None:
    """Every setting is documented in docs/configuration.md under its variable name."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [f"PGOLF_AUDIT_{n.upper()}" for n in Settings.model_fields
               if f"PGOLF_AUDIT_{n.upper()}" not in doc]
    assert not missing, f"undocumented: {missing}"
