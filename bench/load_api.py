"""Service load benchmark (loopback only): the API under uvicorn workers, a real Celery worker,
a real store and broker.

1. 50 submissions posted at once → every one accepted, audited exactly once, none lost or
   duplicated (50 distinct ids, one job each with one attempt, one verdict each).
2. `GET /v1/submissions/{id}/verdict` from 200 concurrent keep-alive connections for a fixed
   time → p50 / p99 latency and throughput (target: p99 < 50 ms on a 2-core machine).

Store and broker: PostgreSQL + Redis when this machine has them (as in compose), otherwise the
embedded SQLite store and broker. The load generator is a small asyncio HTTP/1.1 client (one
request in flight per connection) so that it takes as little of the shared CPU as possible.

  .venv/bin/python bench/load_api.py [--seconds 10] [--connections 200] [--submissions 50]
                                     [--api-workers 2] [--no-append]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("PGOLF_SHARED", REPO.parent / "shared")).resolve()
RESULTS = REPO / "bench" / "RESULTS.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _folder() -> Path:
    base = SHARED / "fixtures" / "records" / "track_10min_16mb"
    folders = sorted((p for p in base.iterdir() if p.is_dir()),
                     key=lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
    return folders[0]


def _variant(folder: Path, i: int, tag: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.name}/{f.relative_to(folder).as_posix()}")
        zf.writestr(f"{folder.name}/NOTES.txt", f"load test {tag} #{i}\n")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# the stack
# ------------------------------------------------------------------------------------------


class Stack:
    def __init__(self, api_workers: int, worker_concurrency: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pgolf-load-"))
        self.port = _free_port()
        self.api_workers, self.worker_concurrency = api_workers, worker_concurrency
        self.procs: list[subprocess.Popen] = []
        self.pg_db: str | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_AUDIT_")}
        extra = os.environ.get("PYTHONPATH")   # e.g. where httptools/uvloop are installed
        env.update(PGOLF_AUDIT_HOME=str(self.tmp / "home"),
                   PYTHONPATH=os.pathsep.join([str(REPO)] + ([extra] if extra else [])),
                   PGOLF_AUDIT_SUBMIT_REQUIRES_TOKEN="false", PGOLF_AUDIT_AUTO_MIGRATE="false")
        suffix = uuid.uuid4().hex[:8]
        if _reachable("127.0.0.1", 6379):
            env["PGOLF_AUDIT_BROKER_URL"] = "redis://127.0.0.1:6379/14"
            env["PGOLF_AUDIT_QUEUE_AUDIT"] = f"audit-load-{suffix}"
            env["PGOLF_AUDIT_QUEUE_GPU"] = f"gpu-load-{suffix}"
        if _reachable("127.0.0.1", 5432):
            import psycopg
            self.pg_db = f"pgolf_load_{suffix}"
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{self.pg_db}"')
            env["PGOLF_AUDIT_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_db}"
        self.env = env
        self.store = "PostgreSQL" if self.pg_db else "SQLite"
        self.broker = "Redis" if "PGOLF_AUDIT_BROKER_URL" in env else "embedded SQLite broker"

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "store.db", "upgrade"], cwd=REPO, env=self.env,
                       check=True, capture_output=True)
        log = open(self.tmp / "api.log", "wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host",
             "127.0.0.1", "--port", str(self.port), "--workers", str(self.api_workers),
             "--log-level", "warning", "--no-access-log"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wlog = open(self.tmp / "worker.log", "wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "--queues", "audit", "--pool", "prefork",
             "--concurrency", str(self.worker_concurrency), "--loglevel", "warning", "--no-migrate"],
            cwd=REPO, env=self.env, stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True))
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if _reachable("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise RuntimeError("the API did not start: " + (self.tmp / "api.log").read_text()[-2000:])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self.pg_db:
            import psycopg
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        if "PGOLF_AUDIT_QUEUE_AUDIT" in self.env:
            import redis
            r = redis.Redis.from_url(self.env["PGOLF_AUDIT_BROKER_URL"])
            for q in (self.env["PGOLF_AUDIT_QUEUE_AUDIT"], self.env["PGOLF_AUDIT_QUEUE_GPU"]):
                r.delete(q, f"_kombu.binding.{q}", f"_kombu.binding_permanent.{q}")
            r.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# phase 1: a burst of submissions
# ------------------------------------------------------------------------------------------


async def burst(base: str, n: int) -> dict:
    import httpx

    folder = _folder()
    tag = uuid.uuid4().hex[:6]
    bodies = [_variant(folder, i, tag) for i in range(n)]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(client.post("/v1/submissions", files={"file": (f"s{i}.zip", b)})
                                    for i, b in enumerate(bodies)))
        accepted_s = time.perf_counter() - t0
        bad = [r.text for r in rs if r.status_code != 202]
        if bad:
            raise RuntimeError(f"{len(bad)} submissions refused: {bad[:2]}")
        ids = [r.json()["id"] for r in rs]
        pending = set(ids)
        states: dict[str, dict] = {}
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            got = await asyncio.gather(*(client.get(f"/v1/submissions/{i}") for i in pending))
            for r in got:
                sub = r.json()
                if sub["state"] in ("passed", "failed", "needs_review", "error_infra", "cancelled"):
                    states[sub["id"]] = sub
                    pending.discard(sub["id"])
        audited_s = time.perf_counter() - t0
        verdicts = await asyncio.gather(*(client.get(f"/v1/submissions/{i}/verdict") for i in ids))
    lost = sorted(pending)
    jobs = [len(s["jobs"]) for s in states.values()]
    attempts = [s["jobs"][0]["attempts"] for s in states.values() if s["jobs"]]
    return {
        "submitted": n, "distinct_ids": len(set(ids)), "audited": len(states), "lost": len(lost),
        "verdicts_200": sum(r.status_code == 200 for r in verdicts),
        "duplicated_jobs": sum(j - 1 for j in jobs), "extra_attempts": sum(a - 1 for a in attempts),
        "error_infra": sum(s["state"] == "error_infra" for s in states.values()),
        "accept_all_s": accepted_s, "audit_all_s": audited_s, "ids": ids,
    }


# ------------------------------------------------------------------------------------------
# phase 2: GET /verdict under 200 concurrent connections
# ------------------------------------------------------------------------------------------


async def _connection(port: int, paths: list[bytes], stop_at: float, lat: list[float],
                      errors: list[str], k: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = k
    try:
        while time.perf_counter() < stop_at:
            req = b"GET " + paths[i % len(paths)] + b" HTTP/1.1\r\nHost: bench\r\n\r\n"
            i += 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


async def hammer(port: int, ids: list[str], connections: int, seconds: float) -> dict:
    paths = [f"/v1/submissions/{i}/verdict".encode() for i in ids]
    lat: list[float] = []
    errors: list[str] = []
    # warm-up: fill every worker's cache and open connections
    warm_until = time.perf_counter() + 1.0
    await asyncio.gather(*(_connection(port, paths, warm_until, [], [], k) for k in range(20)))
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_connection(port, paths, stop_at, lat, errors, k)
                           for k in range(connections)))
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [float("nan")] * 99
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50_ms": q[49] * 1000, "p90_ms": q[89] * 1000, "p99_ms": q[98] * 1000,
            "max_ms": lat[-1] * 1000 if lat else float("nan"), "seconds": wall,
            "error_kinds": sorted(set(errors))[:5]}


# ------------------------------------------------------------------------------------------


def _http_impl() -> str:
    """What uvicorn will use: httptools + uvloop when installed (`uvicorn[standard]`), else the
    pure-Python h11 parser on the asyncio loop."""
    try:
        import httptools  # noqa: F401
        http = "httptools"
    except ImportError:
        http = "h11"
    try:
        import uvloop  # noqa: F401
        return f"{http} + uvloop"
    except ImportError:
        return f"{http} + asyncio"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--submissions", type=int, default=50)
    ap.add_argument("--api-workers", type=int, default=2)
    ap.add_argument("--worker-concurrency", type=int, default=2)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)

    stack = Stack(args.api_workers, args.worker_concurrency)
    try:
        stack.start()
        base = f"http://127.0.0.1:{stack.port}"
        b = asyncio.run(burst(base, args.submissions))
        print(f"burst: {b['submitted']} posted at once → {b['distinct_ids']} ids, "
              f"{b['audited']} audited, {b['lost']} lost, {b['duplicated_jobs']} duplicated jobs, "
              f"{b['extra_attempts']} extra attempts, {b['verdicts_200']} verdicts; "
              f"accepted in {b['accept_all_s']:.2f} s, all audited in {b['audit_all_s']:.2f} s")
        print(f"uvicorn HTTP: {_http_impl()}")
        try:
            import uvloop
            run = uvloop.run
        except ImportError:
            run = asyncio.run
        h = run(hammer(stack.port, b["ids"], args.connections, args.seconds))
        print(f"GET /verdict, {args.connections} connections, {h['seconds']:.1f} s: "
              f"{h['requests']} requests ({h['rps']:.0f}/s), p50 {h['p50_ms']:.1f} ms, "
              f"p90 {h['p90_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, max {h['max_ms']:.1f} ms, "
              f"{h['errors']} errors {h['error_kinds'] or ''}")
    finally:
        stack.stop()
    ok = (b["lost"] == 0 and b["distinct_ids"] == b["submitted"] == b["audited"]
          and b["duplicated_jobs"] == 0 and h["errors"] == 0)
    verdict = "target met" if h["p99_ms"] < 50 else "target (p99 < 50 ms) NOT met"
    print(f"{'OK' if ok else 'PROBLEM'}: burst {'clean' if ok else 'not clean'}; {verdict}")
    if not args.no_append:
        cmd = "python bench/load_api.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if os.environ.get("PYTHONPATH"):
            cmd = "PYTHONPATH=<httptools+uvloop> " + cmd
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = "" if RESULTS.exists() and "## Service load" in RESULTS.read_text() else "\n## Service load\n"
        with open(RESULTS, "a") as fh:
            fh.write(
                f"{section}\n`{cmd.strip()}` — {when}, {platform.node()}, {os.cpu_count()} CPUs, "
                f"{stack.store} + {stack.broker}, uvicorn ×{args.api_workers}, worker prefork "
                f"×{args.worker_concurrency}, uvicorn HTTP: {_http_impl()}, load generator on the "
                f"same machine\n\n"
                f"| measure | value |\n|---|---|\n"
                f"| submissions posted at once | {b['submitted']} → {b['distinct_ids']} ids, "
                f"{b['audited']} audited, {b['lost']} lost, {b['duplicated_jobs']} duplicated |\n"
                f"| all accepted / all audited | {b['accept_all_s']:.2f} s / {b['audit_all_s']:.2f} s |\n"
                f"| GET /verdict, {args.connections} connections, {h['seconds']:.0f} s | "
                f"{h['requests']} requests, {h['rps']:.0f} req/s, {h['errors']} errors |\n"
                f"| latency p50 / p90 / p99 / max | {h['p50_ms']:.1f} / {h['p90_ms']:.1f} / "
                f"{h['p99_ms']:.1f} / {h['max_ms']:.1f} ms ({verdict}) |\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
