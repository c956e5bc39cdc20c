"""docker-compose.yml and the Dockerfile, checked structurally (no Docker engine here)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from api.cli import COMMANDS
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cmd(service: dict) -> list[str]:
    cmd = service["command"]
    return cmd if isinstance(cmd, list) else cmd.split()


def test_services(compose) -> None:
    assert set(compose["services"]) == {"api", "worker", "gpu-worker", "redis", "postgres"}
    for name, svc in compose["services"].items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_commands_are_real_cli_commands(compose) -> None:
    for name in ("api", "worker", "gpu-worker"):
        cmd = _cmd(compose["services"][name])
        assert cmd[0] == "pgolf-audit" and cmd[1] in COMMANDS, (name, cmd)
    assert "--no-worker" in _cmd(compose["services"]["api"])


def test_gpu_worker_is_one_job_at_a_time_on_all_gpus_without_internet(compose) -> None:
    gpu = compose["services"]["gpu-worker"]
    cmd = _cmd(gpu)
    assert cmd[cmd.index("--queues") + 1] == "gpu"
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert any(v.startswith("fineweb:") and v.endswith(":ro") for v in gpu["volumes"])
    assert gpu["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    assert "no-new-privileges:true" in gpu["security_opt"]


def test_shared_blobs_and_private_backing_services(compose) -> None:
    svcs = compose["services"]
    for name in ("api", "worker", "gpu-worker"):
        assert "blobs:/blobs" in svcs[name]["volumes"]
        assert svcs[name]["environment"]["PGOLF_AUDIT_BLOB_DIR"] == "/blobs"
        deps = svcs[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    for name in ("redis", "postgres"):
        assert "ports" not in svcs[name] and svcs[name]["networks"] == ["backend"]
    assert set(compose["volumes"]) >= {"blobs", "redis", "postgres", "fineweb"}


def test_environment_is_settings(compose) -> None:
    fields = {f"PGOLF_AUDIT_{n.upper()}" for n in Settings.model_fields}
    for name in ("api", "worker", "gpu-worker"):
        env = compose["services"][name]["environment"]
        unknown = [k for k in env if k.startswith("PGOLF_AUDIT_") and k not in fields]
        assert not unknown, (name, unknown)
        assert env["PGOLF_AUDIT_BROKER_URL"].startswith("redis://redis:")
        assert env["PGOLF_AUDIT_DATABASE_URL"].startswith("postgresql+psycopg://")
        # Redis must not redeliver a reproduction that is still running
        assert int(env["PGOLF_AUDIT_REDIS_VISIBILITY_TIMEOUT_S"]) > int(env["PGOLF_AUDIT_REPRODUCE_DEADLINE_S"])
    s = Settings(**{k.removeprefix("PGOLF_AUDIT_").lower(): v
                    for k, v in compose["services"]["gpu-worker"]["environment"].items()
                    if k.startswith("PGOLF_AUDIT_") and "${" not in str(v)})
    assert s.broker_is_redis


def test_dockerfile_installs_the_packages_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("api", "worker", "rules", "pgolf", "store"):
        assert re.search(rf"^COPY {pkg} ", text, re.M), pkg
    assert re.search(r"^USER audit$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
