"""The sandbox: environment, isolation, limits, timeouts, streaming and wall-clock markers.

Isolation is host-dependent (unshare may be refused in some containers): each test asserts the
guarantee the record claims — a namespace where `probe_isolation()` found one, the fallback
(tracer refusal, data checksums, group/session sweep) otherwise.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from worker.sandbox import TRACER_DIR, SandboxConfig, probe_isolation, run_sandboxed
from worker.tracer import read_trace


def _sub(tmp: Path, code: str, name: str = "job.py") -> Path:
    d = tmp / "sub"
    d.mkdir(exist_ok=True)
    (d / name).write_text(code)
    return d


def _run(tmp, code, *, cfg=None, env=None, data=None, tracer=True, sink=None):
    sub = _sub(tmp, code)
    return run_sandboxed([sys.executable, "job.py"], submission=sub, run_dir=tmp / "run", run_env=env or {},
                         data_dir=data, cfg=cfg or SandboxConfig(timeout_s=30), sink=sink, tracer=tracer)


def test_environment_is_scrubbed(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/x")
    monkeypatch.setenv("PGOLF_API_TOKEN", "pga_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k")
    code = "import os, json; print(json.dumps(dict(os.environ)))"
    rec = _run(tmp_path, code, env={"SEED": "42", "DATA_PATH": "/d", "NUM_LAYERS": "3"})
    assert rec.status == "ok", rec.tail
    env = json.loads(rec.tail[-1])
    for secret in ("GITHUB_TOKEN", "DATABASE_URL", "PGOLF_API_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert secret not in env
    assert "ghp_secret" not in rec.tail[-1] and "pga_secret" not in rec.tail[-1]
    assert env["SEED"] == "42" and env["NUM_LAYERS"] == "3"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(TRACER_DIR)
    assert env["HOME"].startswith(str(tmp_path)) and env["TMPDIR"].startswith(str(tmp_path))
    assert "GITHUB_TOKEN" not in rec.env_keys


def test_streaming_sink_and_wall_clock_markers(tmp_path):
    code = ("import time\nprint('warming up')\nprint('step:1/5 train_loss:6.9 train_time:5ms step_avg:5.00ms')\n"
            "time.sleep(0.6)\nprint('stopping_early: wallclock_cap train_time:600ms step:5/5')\n"
            "time.sleep(0.4)\nprint('final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2')\n")
    got = []
    rec = _run(tmp_path, code, sink=lambda stream, line: got.append((stream, line, time.monotonic())))
    assert rec.status == "ok"
    assert [g[1] for g in got] == ["warming up", "step:1/5 train_loss:6.9 train_time:5ms step_avg:5.00ms",
                                   "stopping_early: wallclock_cap train_time:600ms step:5/5",
                                   "final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2"]
    # lines arrive while the run goes, not at its end
    assert got[2][2] - got[1][2] > 0.4
    w = rec.wall_s
    assert 0.5 < w["train_end"] - w["first_step"] < 5.0 and w["end"] - w["train_end"] > 0.3
    assert Path(rec.log_file).read_text().count("\n") == 4
    assert (tmp_path / "run" / "phase").read_text() == "eval"


def test_network_is_unreachable(tmp_path):
    code = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', e)\n")
    rec = _run(tmp_path, code, tracer=False)
    assert rec.status == "ok" and rec.tail[-1].startswith("refused")
    assert rec.network_isolated == probe_isolation()["net"]
    rec2 = _run(tmp_path, code, tracer=True)
    assert rec2.tail[-1].startswith("refused")
    nets = [e for e in read_trace(rec2.trace_file) if e["e"] == "net"]
    assert nets and nets[0]["allowed"] is False and "1.1.1.1" in nets[0]["addr"]


def test_loopback_still_works_for_rendezvous(tmp_path):
    code = ("import socket\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "c = socket.create_connection(s.getsockname(), timeout=3); print('LOOPBACK_OK')\n")
    rec = _run(tmp_path, code)
    assert rec.tail[-1] == "LOOPBACK_OK"
    nets = [e for e in read_trace(rec.trace_file) if e["e"] == "net"]
    assert nets and all(e["allowed"] for e in nets)


def test_data_is_read_only_or_changes_are_caught(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_val_000000.bin").write_bytes(b"x" * 100)
    code = ("import os\ntry:\n    open(os.environ['DATA_PATH'] + '/fineweb_val_000000.bin', 'ab').write(b'y')\n"
            "    print('WROTE')\nexcept OSError as e:\n    print('denied', e.errno)\n")
    rec = _run(tmp_path, code, env={"DATA_PATH": str(data)}, data=data)
    if probe_isolation()["mount"]:
        assert rec.tail[-1].startswith("denied") and rec.data_check == "ro-bind"
        assert (data / "fineweb_val_000000.bin").stat().st_size == 100
    else:
        assert rec.data_check == "modified" and rec.data_changes


def test_working_copy_protects_the_submission(tmp_path):
    code = "open(__file__, 'a').write('# TAM' + 'PERED')\nprint('done')\n"
    rec = _run(tmp_path, code)
    assert rec.status == "ok"
    assert "TAMPERED" not in (tmp_path / "sub" / "job.py").read_text()
    assert "TAMPERED" in (Path(rec.cwd) / "job.py").read_text()


def test_crash_and_file_size_limit(tmp_path):
    rec = _run(tmp_path, "import sys\nprint('about to fail')\nsys.exit(3)\n")
    assert rec.status == "crashed" and rec.returncode == 3 and "exit code 3" in rec.message
    big = "open('big.bin', 'wb').write(b'0' * (4 << 20))\nprint('WROTE')\n"
    rec2 = _run(tmp_path, big, cfg=SandboxConfig(timeout_s=30, rlimit_fsize_bytes=1 << 20))
    assert rec2.status == "crashed" and "WROTE" not in rec2.tail


def _alive_with(marker: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            out.append(int(d))
    return out


HANG = """import subprocess, sys, time, signal
grand = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)")
child = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "subprocess.Popen([sys.executable, '-c', %r, '{m}-grandchild']); time.sleep(120)" % grand)
subprocess.Popen([sys.executable, '-c', child, '{m}-child'])
print('step:1/2 train_loss:1.0', flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("isolate", [True, False])
def test_timeout_kills_the_whole_group_including_sigterm_ignoring_grandchild(tmp_path, isolate):
    marker = f"pgolf-sbx-{os.getpid()}-{int(isolate)}"
    cfg = SandboxConfig(timeout_s=2.5, term_grace_s=0.5, isolate=isolate)
    t0 = time.monotonic()
    rec = _run(tmp_path, HANG.replace("{m}", marker), cfg=cfg, tracer=False)
    took = time.monotonic() - t0
    assert rec.status == "timeout" and "limit" in rec.message
    assert took < 10
    time.sleep(0.2)
    assert _alive_with(marker) == [], "a process of the run survived the timeout"
    assert rec.killed["survivors"] == []
    if not isolate or not probe_isolation()["pid"]:
        assert rec.killed["sigkill"], "the SIGTERM-ignoring processes needed SIGKILL"


def test_leftover_daemons_are_cleaned_after_a_normal_exit(tmp_path):
    marker = f"pgolf-daemon-{os.getpid()}"
    code = ("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', "
            f"'{marker}'])\nprint('bye')\n")
    rec = _run(tmp_path, code, cfg=SandboxConfig(timeout_s=30, term_grace_s=0.5), tracer=False)
    assert rec.status == "ok"
    time.sleep(0.2)
    assert _alive_with(marker) == []


def test_required_isolation_refuses_to_run_without_it(tmp_path, monkeypatch):
    import worker.sandbox as sb
    monkeypatch.setattr(sb, "_PROBE_CACHE", {"net": False, "mount": False, "pid": False, "prefix": [],
                                             "reason": "test: no namespaces"})
    rec = _run(tmp_path, "print('ran')\n", cfg=SandboxConfig(require_network_isolation=True))
    assert rec.status == "infra_error" and "no namespaces" in rec.message and rec.lines == 0
