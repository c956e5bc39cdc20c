"""Run one untrusted command in a sandbox and measure it.

What a run gets (see docs/reproduction.md for the guarantees and their limits):
- its own session and process group (`start_new_session=True`) and, where the host allows it,
  its own PID, network and mount namespaces (`unshare`): the network namespace has only a
  loopback interface (torchrun's rendezvous still works, nothing else is reachable); the data
  directory is bind-mounted read-only over itself; when the run ends every process in its PID
  namespace dies with it;
- a fresh working copy of the submission folder as its working directory, HOME and TMPDIR
  inside the run directory;
- a scrubbed environment: an allow-list of harmless host variables plus the run's own (SEED,
  DATA_PATH, TOKENIZER_PATH, the README's variables, PYTHONPATH with the tracer first): no
  tokens, no database URLs, no proxies;
- resource limits (address space, CPU seconds, processes, file size) set before exec;
- a hard timeout that kills the whole process group (SIGTERM, a grace period, SIGKILL), and a
  sweep of its session, so a grandchild that ignores SIGTERM dies too.

stdout/stderr are streamed line by line to a sink while the run goes, and the wall clock is
measured here (start, first training step line, end-of-training line, end), never taken from
the run's own log.

This module is also the in-namespace init (`python -S -E sandbox.py --init ...`): it raises the
loopback interface, makes the data read-only, records what it achieved, then runs the command
as its child and reaps orphans. It imports only the standard library for that reason.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

TRACER_DIR = Path(__file__).resolve().parent / "tracer"
THIS_FILE = Path(__file__).resolve()

# record-log markers (rules.md "Log-line grammar"); both the old and the April formats
FIRST_STEP_RE = re.compile(r"^\s*(?:step:\s*)?\d+/\d+\s+train_loss")
TRAIN_END_RE = re.compile(r"stopping_early|^\s*(?:step:\s*)?(\d+)/\1\s+val_loss")

# host variables a run may see: locale, GPU selection, CUDA install paths. Nothing that can
# hold a credential (tokens, URLs, proxies) is on this list.
ENV_ALLOW = (
    "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM",
    "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_CUDA_ARCH_LIST",
)

Sink = Callable[[str, str], None]   # (stream "stdout"|"stderr", line without newline)


@dataclass
class SandboxConfig:
    timeout_s: float = 600 + 600 + 300       # train + eval budgets + slack (startup, compile, I/O)
    term_grace_s: float = 10.0               # SIGTERM -> SIGKILL
    rlimit_as_bytes: int | None = None       # off by default: CUDA maps far more than it uses
    rlimit_cpu_s: int | None = None          # default: timeout x cores (a backstop, not the timer)
    rlimit_nproc: int | None = 16384         # threads count too (torch spawns many)
    rlimit_fsize_bytes: int | None = 16 << 30
    isolate: bool = True                     # try namespaces (unshare); record what was achieved
    require_network_isolation: bool = False  # refuse to run when no network namespace is possible
    extra_env_allow: tuple[str, ...] = ()
    keep_workdir: bool = True


@dataclass
class RunRecord:
    argv: list[str]
    cwd: str
    status: str = "infra_error"              # ok | crashed | timeout | stopped | infra_error
    returncode: int | None = None
    started_at: float | None = None          # epoch seconds
    wall_s: dict[str, float] = field(default_factory=dict)  # start(0), first_step, train_end, end
    isolation: dict[str, Any] = field(default_factory=dict)
    network_isolated: bool = False
    data_check: str = "unchecked"            # ro-bind | unchanged | modified | unchecked
    data_changes: list[str] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    env_keys: list[str] = field(default_factory=list)   # names only: values may be long
    log_file: str | None = None
    trace_file: str | None = None
    lines: int = 0
    tail: list[str] = field(default_factory=list)
    killed: dict[str, Any] = field(default_factory=dict)  # what the timeout/cleanup had to kill
    gpu: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# host capabilities


_PROBE_CACHE: dict[str, Any] | None = None


def _unshare_prefix(net: bool, mount: bool, pid: bool) -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        return []
    cmd = [exe]
    if os.geteuid() != 0:
        cmd.append("--map-root-user")
    if net:
        cmd.append("--net")
    if mount:
        cmd.append("--mount")
    if pid:
        cmd += ["--pid", "--fork", "--kill-child"]
        if mount:
            # a /proc of the new PID namespace: without it getpid() and /proc disagree, and the
            # CUDA driver fails to initialize (error 304, seen on an H100 node)
            cmd.append("--mount-proc")
    return cmd


def probe_isolation(refresh: bool = False) -> dict[str, Any]:
    """Which namespaces this host lets us create (cached). Tried from the strongest set down."""
    global _PROBE_CACHE
    if _PROBE_CACHE is not None and not refresh:
        return _PROBE_CACHE
    found: dict[str, Any] = {"net": False, "mount": False, "pid": False, "prefix": [], "reason": ""}
    if shutil.which("unshare") is None:
        found["reason"] = "unshare(1) not installed"
    else:
        with tempfile.TemporaryDirectory() as d:
            # a PID namespace only together with a mount namespace (its own /proc, see above)
            for net, mount, pid in ((True, True, True), (True, True, False), (True, False, False),
                                    (False, True, True)):
                prefix = _unshare_prefix(net, mount, pid)
                status = Path(d) / "probe.json"
                status.unlink(missing_ok=True)
                data = Path(d) / "data"
                data.mkdir(exist_ok=True)
                argv = prefix + ["--", sys.executable, "-S", "-E", str(THIS_FILE), "--init",
                                 str(status), str(data) if mount else "", "--", "/bin/true"]
                try:
                    rc = subprocess.run(argv, capture_output=True, timeout=30).returncode
                except (OSError, subprocess.TimeoutExpired) as e:
                    found["reason"] = f"unshare failed: {e}"
                    continue
                if rc != 0 or not status.exists():
                    found["reason"] = f"unshare {' '.join(prefix[1:])} exited {rc}"
                    continue
                st = json.loads(status.read_text())
                if net and not st.get("loopback_up"):
                    found["reason"] = "network namespace without a working loopback"
                    continue
                found.update(net=net, mount=mount and st.get("data_readonly") is True, pid=pid,
                             prefix=prefix, reason="")
                break
    _PROBE_CACHE = found
    return found


# ---------------------------------------------------------------------------------------------
# environment and limits


def build_env(run_env: dict[str, str], *, home: Path, tmp: Path, trace_file: Path | None,
              phase_file: Path | None, extra_allow: tuple[str, ...] = (), tracer: bool = True,
              isolated_net: bool = False) -> dict[str, str]:
    env: dict[str, str] = {}
    for k in ENV_ALLOW + tuple(extra_allow):
        if k in os.environ:
            env[k] = os.environ[k]
    py_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([py_bin, "/usr/local/bin", "/usr/bin", "/bin"])
    env["HOME"] = str(home)
    env["TMPDIR"] = str(tmp)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    env["PYTHONUNBUFFERED"] = "1"        # lines reach us when written (wall-clock markers)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if isolated_net:
        # only loopback exists in the namespace: tell the collective libraries so
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    env.update(run_env)
    if tracer:
        paths = [str(TRACER_DIR)]
        if run_env.get("PYTHONPATH"):
            paths.append(run_env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if trace_file is not None:
            env["PGOLF_TRACE_FILE"] = str(trace_file)
        if phase_file is not None:
            env["PGOLF_PHASE_FILE"] = str(phase_file)
    return env


def _limits(cfg: SandboxConfig) -> dict[str, int | None]:
    cpu = cfg.rlimit_cpu_s
    if cpu is None:
        cpu = int(cfg.timeout_s * max(os.cpu_count() or 1, 1) + 60)
    return {"RLIMIT_AS": cfg.rlimit_as_bytes, "RLIMIT_CPU": cpu,
            "RLIMIT_NPROC": cfg.rlimit_nproc, "RLIMIT_FSIZE": cfg.rlimit_fsize_bytes}


def _preexec(limits: dict[str, int | None]) -> Callable[[], None]:
    import resource

    def apply() -> None:
        for name, value in limits.items():
            if value is None:
                continue
            res = getattr(resource, name)
            soft, hard = resource.getrlimit(res)
            v = value if hard == resource.RLIM_INFINITY else min(value, hard)
            try:
                resource.setrlimit(res, (v, hard if hard != resource.RLIM_INFINITY else v))
            except (ValueError, OSError):
                resource.setrlimit(res, (v, hard))
        # the run is never more important than the worker that watches it
        try:
            os.nice(5)
        except OSError:
            pass
    return apply


# ---------------------------------------------------------------------------------------------
# data integrity


def data_fingerprint(data_dir: Path | None) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    if data_dir is None or not data_dir.is_dir():
        return out
    for root, _dirs, files in os.walk(data_dir):
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except OSError:
                continue
            out[str(p.relative_to(data_dir))] = (st.st_size, st.st_mtime_ns)
    return out


def _diff(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    changes = [f"removed {k}" for k in before if k not in after]
    changes += [f"added {k}" for k in after if k not in before]
    changes += [f"modified {k}" for k in before if k in after and before[k] != after[k]]
    return sorted(changes)


# ---------------------------------------------------------------------------------------------
# process cleanup


def _proc_stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, pgid, sid, state) from /proc/PID/stat, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[1]), int(rest[2]), int(rest[3]), rest[0]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session `sid` or process group `sid`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _proc_stat(int(d))
        if st and (st[1] == sid or st[2] == sid) and st[3] != "Z":
            out.append(int(d))
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_group(leader: int, grace_s: float, proc: subprocess.Popen | None = None) -> dict[str, Any]:
    """SIGTERM the group, wait `grace_s`, then SIGKILL the group, the session and every known
    descendant (catches children that left the group with setpgid)."""
    report: dict[str, Any] = {"sigterm": False, "sigkill": [], "survivors": []}
    known = set(_descendants(leader)) | {leader}
    try:
        os.killpg(leader, signal.SIGTERM)
        report["sigterm"] = True
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        known |= set(_descendants(leader))
        alive = [p for p in session_members(leader) + sorted(known) if _alive(p)]
        if not alive:
            break
        if proc is not None:
            proc.poll()
        time.sleep(0.05)
    known |= set(_descendants(leader))
    targets = sorted(set(session_members(leader)) | {p for p in known if _alive(p)})
    for p in targets:
        try:
            os.kill(p, signal.SIGKILL)
            report["sigkill"].append(p)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    time.sleep(0.05)
    report["survivors"] = [p for p in targets if _alive(p)]
    return report


def _alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[3] != "Z"


# ---------------------------------------------------------------------------------------------
# GPU facts (read here, outside the sandbox)


def gpu_info() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    if not rows:
        return {}
    return {"count": len(rows), "name": rows[0][0], "driver": rows[0][1] if len(rows[0]) > 1 else None,
            "memory": rows[0][2] if len(rows[0]) > 2 else None, "names": [r[0] for r in rows]}


# ---------------------------------------------------------------------------------------------
# the runner


def prepare_workdir(submission: Path, run_dir: Path) -> Path:
    """A fresh copy of the submission folder (links are copied as links, never followed)."""
    work = run_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(submission, work, symlinks=True)
    return work


def run_sandboxed(argv: list[str], *, submission: Path, run_dir: Path,
                  run_env: dict[str, str] | None = None, data_dir: Path | None = None,
                  cfg: SandboxConfig | None = None, sink: Sink | None = None,
                  tracer: bool = True, should_stop: Callable[[], bool] | None = None) -> RunRecord:
    """Run `argv` (relative script paths resolve inside the working copy) and return its record.
    `should_stop` (polled a few times a second) ends the run early, like the timeout does, with
    status "stopped": a cancel, or a calibration that has measured enough."""
    cfg = cfg or SandboxConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    work = prepare_workdir(Path(submission), run_dir)
    home, tmp = run_dir / "home", run_dir / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    trace_file = run_dir / "trace.jsonl"
    phase_file = run_dir / "phase"
    for f in (trace_file, phase_file):
        f.unlink(missing_ok=True)
    log_file = run_dir / "run.log"
    init_status = run_dir / "sandbox_init.json"
    init_status.unlink(missing_ok=True)

    rec = RunRecord(argv=list(argv), cwd=str(work), log_file=str(log_file),
                    trace_file=str(trace_file) if tracer else None)
    caps = probe_isolation() if cfg.isolate else {"net": False, "mount": False, "pid": False,
                                                     "prefix": [], "reason": "isolation disabled"}
    if cfg.require_network_isolation and not caps["net"]:
        rec.message = f"network isolation required but unavailable: {caps.get('reason')}"
        return rec
    env = build_env(run_env or {}, home=home, tmp=tmp, trace_file=trace_file if tracer else None,
                    phase_file=phase_file, extra_allow=cfg.extra_env_allow, tracer=tracer,
                    isolated_net=caps["net"])
    rec.env_keys = sorted(env)
    limits = _limits(cfg)
    rec.limits = {k: v for k, v in limits.items()} | {"timeout_s": cfg.timeout_s}
    rec.gpu = gpu_info()

    full = (list(caps["prefix"]) + ["--"] if caps["prefix"] else []) + [sys.executable, "-S", "-E", str(THIS_FILE), "--init",
                                   str(init_status), str(data_dir) if (data_dir and caps["mount"]) else "",
                                   "--", *argv]
    before = data_fingerprint(data_dir)
    t0 = time.monotonic()
    rec.started_at = time.time()
    rec.wall_s["start"] = 0.0
    try:
        proc = subprocess.Popen(full, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=_preexec(limits))
    except OSError as e:
        rec.message = f"could not start the run: {e}"
        return rec

    tail: list[str] = []
    lock = threading.Lock()
    log = open(log_file, "w", encoding="utf-8")

    def pump(stream, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            now = time.monotonic() - t0
            with lock:
                rec.lines += 1
                log.write(line + "\n")
                tail.append(line)
                if len(tail) > 200:
                    del tail[:100]
                if "first_step" not in rec.wall_s and FIRST_STEP_RE.search(line):
                    rec.wall_s["first_step"] = round(now, 3)
                if "train_end" not in rec.wall_s and TRAIN_END_RE.search(line):
                    rec.wall_s["train_end"] = round(now, 3)
                    # ranks that print nothing learn of the phase change from this file
                    try:
                        phase_file.write_text("eval")
                    except OSError:
                        pass
            if sink is not None:
                try:
                    sink(name, line)
                except Exception:   # a failing sink must not kill the run's pipes
                    pass
        stream.close()

    threads = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
    for th in threads:
        th.start()
    timed_out = stopped = False
    deadline = t0 + cfg.timeout_s
    while True:
        try:
            proc.wait(timeout=max(min(0.2, deadline - time.monotonic()), 0.001))
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            timed_out = True
        elif should_stop is not None and should_stop():
            stopped = True
        if timed_out or stopped:
            rec.killed = kill_group(proc.pid, cfg.term_grace_s, proc)
            break
    # whatever the run left behind (daemonized children, a pid-namespace-less host) goes too
    leftovers = [p for p in session_members(proc.pid) if p != proc.pid]
    if leftovers and not (timed_out or stopped):
        rec.killed = kill_group(proc.pid, min(cfg.term_grace_s, 2.0), proc)
        rec.killed["after_exit"] = True
    for th in threads:
        th.join(timeout=10)
    log.close()
    rec.wall_s["end"] = round(time.monotonic() - t0, 3)
    rec.returncode = proc.returncode
    rec.tail = tail[-50:]

    st: dict[str, Any] = {}
    if init_status.exists():
        try:
            st = json.loads(init_status.read_text())
        except ValueError:
            st = {}
    rec.network_isolated = bool(caps["net"] and st.get("loopback_up"))
    rec.isolation = {"network": "namespace" if rec.network_isolated else "none (tracer blocks sockets)",
                     "pid_namespace": bool(caps["pid"]), "mount_namespace": bool(caps["mount"]),
                     "data_readonly_mount": st.get("data_readonly") is True,
                     "reason": caps.get("reason") or st.get("error") or ""}
    after = data_fingerprint(data_dir)
    changes = _diff(before, after)
    if data_dir is None:
        rec.data_check = "unchecked"
    elif changes:
        rec.data_check, rec.data_changes = "modified", changes[:50]
    elif rec.isolation["data_readonly_mount"]:
        rec.data_check = "ro-bind"
    else:
        rec.data_check = "unchanged"

    if timed_out:
        rec.status, rec.message = "timeout", f"killed after the {cfg.timeout_s:.0f} s limit"
    elif stopped:
        rec.status, rec.message = "stopped", "stopped on request"
    elif proc.returncode == 0:
        rec.status, rec.message = "ok", "exited 0"
    else:
        rc = proc.returncode
        why = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        rec.status, rec.message = "crashed", f"the run ended with {why}"
    if not cfg.keep_workdir:
        shutil.rmtree(work, ignore_errors=True)
    return rec


# ---------------------------------------------------------------------------------------------
# in-namespace init (stdlib only; runs as `python -S -E sandbox.py --init STATUS DATA -- CMD...`)


def _bring_loopback_up() -> bool:
    import fcntl
    import socket
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
            return True
    except OSError:
        return False


def _readonly_bind(path: str) -> tuple[bool, str]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    # keep our mounts from propagating back to the host
    libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    p = path.encode()
    if libc.mount(p, p, None, MS_BIND | MS_REC, None) != 0:
        return False, f"bind mount failed: {os.strerror(ctypes.get_errno())}"
    if libc.mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None) != 0:
        return False, f"read-only remount failed: {os.strerror(ctypes.get_errno())}"
    return True, ""


def _init_main(args: list[str]) -> int:
    status_file, data = args[0], args[1]
    cmd = args[3:] if len(args) > 2 and args[2] == "--" else args[2:]
    st: dict[str, Any] = {"pid": os.getpid(), "loopback_up": _bring_loopback_up()}
    try:    # opened first: the status file may sit under the data directory's parent
        status = open(status_file, "w")
    except OSError:
        status = None
    if data:
        ok, err = _readonly_bind(data)
        st["data_readonly"] = ok
        if err:
            st["error"] = err
    if status is not None:
        with status:
            json.dump(st, status)
    if not cmd:
        return 0
    child = os.fork()
    if child == 0:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            sys.stderr.write(f"pgolf-sandbox: cannot run {cmd[0]}: {e}\n")
            os._exit(127)

    # as PID 1 of a namespace we get no default signal actions: pass SIGTERM/SIGINT on
    def forward(signum, _frame):
        try:
            os.killpg(os.getpgid(0), signum) if os.getpid() != 1 else os.kill(-1, signum)
        except OSError:
            pass
    if os.getpid() == 1:
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
    code = 0
    while True:   # reap orphans until the command itself ends
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            break
    return code if code >= 0 else 128 - code


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--init":
    sys.exit(_init_main(sys.argv[2:]))
