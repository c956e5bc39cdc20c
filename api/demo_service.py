"""The README's main job: the service on embedded defaults, end to end, for a person to watch.

Starts `pgolf-audit serve` (API + worker child; SQLite, blob dir and a serverless broker under
$PGOLF_AUDIT_HOME, default `.pgolf-audit/demo` in the working directory), creates a submit token,
uploads the bundled examples as zip archives, waits for the worker to audit them, prints each
verdict and its report URL, saves each report as an HTML file beside the database, and stops the
server (unless --keep-serving). Exit 0 when the legal example passes and the illegal one fails.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

from api.serve import stop_worker

TERMINAL = {"passed", "failed", "needs_review", "error_infra", "cancelled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.name}/{f.relative_to(folder)}")
    return buf.getvalue()


def _wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server did not become healthy within {timeout:.0f} s")


def _submit_and_wait(client: httpx.Client, token: str, folder: Path, timeout: float = 180.0) -> dict:
    r = client.post("/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                    files={"file": (f"{folder.name}.zip", _zip_folder(folder), "application/zip")})
    if r.status_code != 202:
        raise RuntimeError(f"upload of {folder.name} answered {r.status_code}: {r.text[:300]}")
    sub_id = r.json()["id"]
    print(f"  submitted {folder.name} -> {r.headers.get('location')} (202)", flush=True)
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        sub = client.get(f"/v1/submissions/{sub_id}").json()
        if sub["state"] != last:
            print(f"    state: {sub['state']}", flush=True)
            last = sub["state"]
        if sub["state"] in TERMINAL:
            return sub
        time.sleep(0.4)
    raise RuntimeError(f"{folder.name} was not audited within {timeout:.0f} s (state {last})")


def run_service_demo(argv: list[str]) -> int:
    from api.demo import ILLEGAL, LEGAL, build
    from rules.model import verdict_from_json
    from rules.render import terminal

    home = Path(os.environ.get("PGOLF_AUDIT_HOME") or Path.cwd() / ".pgolf-audit" / "demo").resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PGOLF_AUDIT_HOME=str(home), PGOLF_AUDIT_PUBLIC_BASE_URL=base)
    for key in ("PGOLF_AUDIT_DATABASE_URL", "PGOLF_AUDIT_BROKER_URL", "PGOLF_AUDIT_BLOB_DIR",
                "PGOLF_AUDIT_RESULT_BACKEND"):
        env.pop(key, None)            # embedded defaults, whatever the shell has set
    log_path = home / "serve.log"
    print(f"pgolf-audit demo: starting the service on {base} (home {home}; log {log_path})", flush=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=log, stderr=log,
                                start_new_session=True)
    ok = False
    try:
        _wait_healthy(base, proc)
        tok = subprocess.run([sys.executable, "-m", "api.cli", "token", "create",
                              f"demo-{os.getpid()}-{int(time.time())}", "--role", "submit"],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        outcomes = {}
        with tempfile.TemporaryDirectory(prefix="pgolf-demo-") as tmp, \
                httpx.Client(base_url=base, timeout=30.0) as client:
            for spec, title in ((LEGAL, "The legal example"),
                                (ILLEGAL, "The illegal example (pre-quant TTT on validation, over-size artifact)")):
                folder = build(spec, Path(tmp) / spec.folder)
                print(f"\n== {title} ==", flush=True)
                sub = _submit_and_wait(client, tok, folder)
                v = client.get(f"/v1/submissions/{sub['id']}/verdict")
                if v.status_code != 200:
                    print(f"  no verdict: {v.status_code} {v.text[:300]}")
                    outcomes[spec.key] = sub["state"]
                    continue
                verdict = v.json()
                outcomes[spec.key] = verdict["outcome"]
                print(terminal(verdict_from_json(verdict)))
                report_url = f"{base}/v1/submissions/{sub['id']}/report"
                html = client.get(f"/v1/submissions/{sub['id']}/report").text
                saved = home / "reports" / f"{sub['id']}.html"
                saved.parent.mkdir(exist_ok=True)
                saved.write_text(html, encoding="utf-8")
                print(f"report: {report_url}\nsaved:  {saved}", flush=True)
        ok = outcomes.get(LEGAL.key) == "pass" and outcomes.get(ILLEGAL.key) == "fail"
        if not ok:
            print(f"demo: expected pass/fail, got {outcomes}", file=sys.stderr)
        if "--keep-serving" in argv:
            print(f"\nserving on {base} — Ctrl-C to stop", flush=True)
            try:
                proc.wait()
            except KeyboardInterrupt:
                pass
    except (RuntimeError, subprocess.CalledProcessError, httpx.HTTPError) as exc:
        print(f"demo: {exc} (see {log_path})", file=sys.stderr)
        return 1
    finally:
        stop_worker(proc, timeout=30)
    return 0 if ok else 1
