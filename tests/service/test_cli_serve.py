"""The embedded deployment as a user runs it: `pgolf-audit token create` and `pgolf-audit serve`
(API + worker child, SQLite store, SQLite broker, no servers) on a fresh home directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.service.conftest import REPO, free_port, wait_for, zip_folder

pytestmark = pytest.mark.slow


def _env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_AUDIT_")}
    env.update(PGOLF_AUDIT_HOME=str(home), PYTHONPATH=str(REPO), PGOLF_AUDIT_SWEEPER_INTERVAL_S="5")
    return env


def _cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_token_cli(tmp_path) -> None:
    env = _env(tmp_path / "home")
    made = _cli(env, "token", "create", "alice", "--role", "admin")
    assert made.returncode == 0 and made.stdout.strip().startswith("pga_")
    assert "shown only now" in made.stderr
    assert _cli(env, "token", "create", "alice").returncode == 3      # names are unique
    listed = _cli(env, "token", "list").stdout
    assert "alice\tadmin\tactive" in listed and made.stdout.strip() not in listed
    assert _cli(env, "token", "revoke", "alice").returncode == 0
    assert "alice\tadmin\trevoked" in _cli(env, "token", "list").stdout
    assert _cli(env, "token", "revoke", "bob").returncode == 3


def test_serve_embedded_end_to_end(tmp_path, record_folders) -> None:
    home = tmp_path / "home"
    env = _env(home)
    token = _cli(env, "token", "create", "me", "--role", "submit").stdout.strip()
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                             "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def diagnose() -> str:
        return (tmp_path / "serve.log").read_text(errors="replace")[-3000:]

    try:
        def healthy():
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "the API", interval=0.3, diagnose=diagnose)
        r = httpx.post(f"{base}/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("x.zip", zip_folder(record_folders[0]))}, timeout=30)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_for(lambda: httpx.get(f"{base}/v1/submissions/{sid}/verdict").status_code == 200,
                 60, "the verdict", interval=0.3, diagnose=diagnose)
        assert httpx.get(f"{base}/v1/submissions/{sid}/report").status_code == 200
        assert (home / "audit.db").exists() and (home / "broker.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        log.close()
    # the worker child was stopped with the API (no orphan keeps the home busy)
    import re
    m = re.search(r"worker pid (\d+)", (tmp_path / "serve.log").read_text())
    assert m, diagnose()
    with pytest.raises(ProcessLookupError):
        os.kill(int(m.group(1)), 0)
