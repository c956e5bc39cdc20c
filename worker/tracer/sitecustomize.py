"""pgolf-audit tracer: loaded first in every Python process of a sandboxed run (PYTHONPATH).

It changes no result: every wrapper calls the original and returns its value untouched. The
one behaviour it does change is the network: connections and name lookups to anything but
loopback are recorded and refused with an OSError (the competition forbids network access;
torchrun's rendezvous on localhost still works).

What it writes (JSON lines appended to $PGOLF_TRACE_FILE, buffered, flushed about once a
second and at exit; several processes append to the one file, one whole write per flush):
  start    {pid, rank, argv}
  phase    {ph: setup|train|eval, why}: train from the first training-step log line, eval from the
           end-of-training line (stopping_early / final step / final_* lines); ranks that print
           nothing learn it from $PGOLF_PHASE_FILE
  open     {p, m, ph, val, tr}: first open of a path in a phase (builtins.open / io.open /
           os.open; numpy's fromfile, memmap and load all go through io.open)
  net      {kind, addr, allowed}
  score    {ph, grad, r: [[a,b],...], unres, n}: a cross-entropy call whose targets lie in the
           validation stream; every call in eval, sampled grad-enabled calls before
  bwd      {ph, r}: backward in eval, with the ranges of the grad-enabled forwards before it
  step     {ph, r, unres}: optimizer step in eval, ranges used since the previous step
  summary  {steps, ce, opens}
Times `t` are time.time() (one clock for all processes of a host).
"""
from __future__ import annotations

import builtins
import io
import json
import os
import re
import sys
import threading
import time

_TRACE = os.environ.get("PGOLF_TRACE_FILE")
_PHASE_FILE = os.environ.get("PGOLF_PHASE_FILE")
_DATA = os.environ.get("DATA_PATH")
_RANK = os.environ.get("RANK", "-")
_ORDER = {"setup": 0, "train": 1, "eval": 2}
_FIRST_STEP = re.compile(r"(?:^|\n)\s*(?:step:\s*)?\d+/\d+\s+train_loss|warmup_step")
_TRAIN_END = re.compile(r"stopping_early|(?:^|\n)\s*(?:step:\s*)?(\d+)/\1\s+val_loss")
_EVAL_LINES = re.compile(r"(?:^|\n)\s*(?:final_|legal_ttt|ttt_|ttt:|quantized_ttt|DIAGNOSTIC|diagnostic|"
                         r"ema:applying|Serialized model|peak memory|beginning TTT)")
_SAMPLE_FIRST, _SAMPLE_EVERY = 4, 64
# run-private scratch and installed code: opens there are counted, not written as events
_QUIET_PREFIXES = tuple(p.rstrip(os.sep) + os.sep for p in
                        {os.environ.get("TMPDIR") or "", os.environ.get("HOME") or "", sys.prefix,
                         sys.base_prefix, "/proc", "/sys", "/dev", "/usr/lib", "/usr/local/lib"}
                        if p and p != os.sep)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "", None}


class _State:
    def __init__(self) -> None:
        self.phase = "setup"
        self.phase_mtime = 0.0
        self.phase_checked = 0.0
        self.buf: list[str] = []
        self.last_flush = time.monotonic()
        self.seq = 0
        self.lock = threading.RLock()
        self.local = threading.local()
        self.seen_opens: set[tuple[str, str, str]] = set()
        self.open_counts: dict[str, int] = {}
        self.quiet_opens = 0
        self.steps = {"setup": 0, "train": 0, "eval": 0}
        self.ce = {"setup": 0, "train": 0, "eval": 0}
        self.grad_ce = {"setup": 0, "train": 0, "eval": 0}
        self.pending: list[list[int]] = []     # grad-forward ranges since the last step (eval)
        self.pending_amb: list = []             # their ambiguous runs (duplicated text)
        self.sbuf: list = []                    # (time, targets) of no-grad scoring calls to resolve
        self.sbuf_tokens = 0
        self.pending_unres = 0
        self.index = None
        self.index_error: str | None = None
        self.index_ready = threading.Event()
        self.fd: int | None = None


S = _State()
_orig_open = builtins.open
_orig_os_open = os.open


def _inside() -> bool:
    return getattr(S.local, "busy", False)


class _Busy:
    def __enter__(self):
        self.prev = _inside()
        S.local.busy = True

    def __exit__(self, *a):
        S.local.busy = self.prev


def _emit(ev: dict, flush: bool = False) -> None:
    if not _TRACE:
        return
    with S.lock:
        S.seq += 1
        ev.setdefault("t", time.time())
        ev["pid"] = os.getpid()
        ev["rank"] = _RANK
        ev["seq"] = S.seq
        S.buf.append(json.dumps(ev, separators=(",", ":")))
        if flush or len(S.buf) >= 256 or time.monotonic() - S.last_flush > 1.0:
            _flush()


def _flush() -> None:
    with S.lock:
        if not S.buf or not _TRACE:
            return
        data = ("\n".join(S.buf) + "\n").encode()
        S.buf.clear()
        S.last_flush = time.monotonic()
        try:
            if S.fd is None:
                S.fd = _orig_os_open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(S.fd, data)
        except OSError:
            pass


# --------------------------------------------------------------------------------------- phase


def _set_phase(ph: str, why: str) -> None:
    if _ORDER[ph] <= _ORDER[S.phase]:
        return
    S.phase = ph
    _emit({"e": "phase", "ph": ph, "why": why[:120]}, flush=True)
    if _PHASE_FILE:
        try:
            tmp = f"{_PHASE_FILE}.{os.getpid()}"
            with _Busy():
                with _orig_open(tmp, "w") as f:
                    f.write(ph)
                os.replace(tmp, _PHASE_FILE)
        except OSError:
            pass


def _poll_phase(force: bool = False) -> str:
    """Pick up a phase change written by another process (cheap: one stat, rate-limited)."""
    if S.phase == "eval" or not _PHASE_FILE:
        return S.phase
    now = time.monotonic()
    if not force and now - S.phase_checked < 0.001:
        return S.phase
    S.phase_checked = now
    try:
        m = os.stat(_PHASE_FILE).st_mtime
    except OSError:
        return S.phase
    if m != S.phase_mtime:
        S.phase_mtime = m
        try:
            with _Busy():
                with _orig_open(_PHASE_FILE) as f:
                    ph = f.read().strip()
        except OSError:
            return S.phase
        if ph in _ORDER:
            _set_phase(ph, "phase file")
    return S.phase


def _watch_text(text: str) -> None:
    if S.phase == "eval" or not text:
        return
    if _TRAIN_END.search(text):
        _set_phase("eval", text.strip())
    elif S.phase == "train" and _EVAL_LINES.search(text):
        _set_phase("eval", text.strip())
    elif S.phase == "setup" and _FIRST_STEP.search(text):
        _set_phase("train", text.strip())


class _WatchedStream:
    """Delegates everything to the real stream; looks at what is written for log markers."""

    def __init__(self, stream):
        object.__setattr__(self, "_s", stream)

    def write(self, text):
        try:
            _watch_text(text)
        except Exception:
            pass
        return self._s.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._s, name)

    def __setattr__(self, name, value):
        setattr(self._s, name, value)


# ---------------------------------------------------------------------------------------- files


def _classify(path: str) -> tuple[bool, bool]:
    name = os.path.basename(path)
    return ("_val_" in name or name.startswith("val_")), ("_train_" in name or name.startswith("train_"))


def _record_open(file, mode) -> None:
    if _inside() or not isinstance(file, (str, bytes, os.PathLike)):
        return
    try:
        path = os.fsdecode(file)
        if not os.path.isabs(path):
            path = os.path.join(os.getcwd(), path)
        if path == _TRACE:
            return
        ph = _poll_phase()
        m = "w" if isinstance(mode, str) and any(c in mode for c in "wax+") else (
            "w" if isinstance(mode, int) and mode & (os.O_WRONLY | os.O_RDWR) else "r")
        S.open_counts[path] = S.open_counts.get(path, 0) + 1
        key = (path, m, ph)
        if key in S.seen_opens or len(S.seen_opens) > 20000:
            return
        S.seen_opens.add(key)
        val, tr = _classify(path)
        if not (val or tr) and path.startswith(_QUIET_PREFIXES):
            S.quiet_opens += 1
            return
        _emit({"e": "open", "p": path, "m": m, "ph": ph, "val": val, "tr": tr})
    except Exception:
        pass


def _open(file, mode="r", *args, **kwargs):
    _record_open(file, mode)
    return _orig_open(file, mode, *args, **kwargs)


def _os_open(path, flags, *args, **kwargs):
    _record_open(path, flags)
    return _orig_os_open(path, flags, *args, **kwargs)


# -------------------------------------------------------------------------------------- network


def _is_loopback_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOOPBACK_NAMES:
        return True
    h = str(host).lower()
    if h.startswith("127.") or h in ("::1", "0.0.0.0", "::"):
        return True
    try:
        import socket as _s
        return h == _s.gethostname().lower()
    except Exception:
        return False


def _install_socket() -> None:
    import socket

    def check(kind: str, family, address) -> None:
        if family == getattr(socket, "AF_UNIX", object()):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        allowed = _is_loopback_host(host)
        _emit({"e": "net", "kind": kind, "addr": repr(address)[:200], "allowed": allowed,
               "ph": S.phase}, flush=not allowed)
        if not allowed:
            import errno
            raise OSError(errno.ENETUNREACH, "network access is disabled in pgolf-audit runs")

    orig_connect, orig_connect_ex = socket.socket.connect, socket.socket.connect_ex
    orig_sendto = socket.socket.sendto
    orig_gai, orig_cc = socket.getaddrinfo, socket.create_connection

    def connect(self, address):
        check("connect", self.family, address)
        return orig_connect(self, address)

    def connect_ex(self, address):
        check("connect_ex", self.family, address)
        return orig_connect_ex(self, address)

    def sendto(self, data, *args):
        address = args[-1] if args else None
        check("sendto", self.family, address)
        return orig_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback_host(host):
            _emit({"e": "net", "kind": "getaddrinfo", "addr": repr(host)[:200], "allowed": False,
                   "ph": S.phase}, flush=True)
            raise socket.gaierror(socket.EAI_NONAME, "name resolution is disabled in pgolf-audit runs")
        return orig_gai(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        check("create_connection", None, address)
        return orig_cc(address, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = create_connection


# ----------------------------------------------------------------------------- validation index


def _tracer_lib():
    """worker/tracer/__init__.py, loaded by path (this process need not see the worker package)."""
    mod = sys.modules.get("_pgolf_tracer_lib")
    if mod is None:
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "_pgolf_tracer_lib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_pgolf_tracer_lib"] = mod
        spec.loader.exec_module(mod)
    return mod


def _build_index() -> None:
    S.local.busy = True
    t0 = time.time()
    try:
        if not _DATA:
            S.index_error = "DATA_PATH not set"
        else:
            S.index = _tracer_lib().ValIndex.from_data_path(_DATA, opener=_orig_open)
            if S.index is None:
                S.index_error = "no validation shards under DATA_PATH"
    except Exception as e:  # a broken index must never break the run
        S.index_error = f"{type(e).__name__}: {e}"[:200]
    S.index_ready.set()
    _emit({"e": "val_index", "n": getattr(S.index, "n", None), "k": getattr(S.index, "stride", None),
           "error": S.index_error, "build_s": round(time.time() - t0, 3)})


def _start_index() -> None:
    if _TRACE and not S.index_ready.is_set():
        threading.Thread(target=_build_index, name="pgolf-trace-index", daemon=True).start()


def _resolve(target) -> tuple[list[list[int]], int, int, list]:
    """(val ranges, one per aligned run, unmerged; unattributed tokens; tokens; ambiguous runs)
    of a target tensor (moved to the CPU)."""
    S.index_ready.wait()
    t = target.detach()
    n = int(t.numel())
    if S.index is None:
        return [], n, n, []
    arr = t.reshape(-1).to("cpu").numpy()
    (rows, unres, amb), = S.index.ranges_by_segment(arr, [0, arr.size])
    return rows, unres, n, amb


# --------------------------------------------------------------------------------------- torch


def _on_score(inp, target) -> None:
    import torch
    if _inside():
        return
    with _Busy():
        ph = _poll_phase()
        grad = bool(torch.is_grad_enabled() and getattr(inp, "requires_grad", False))
        S.ce[ph] += 1
        if not hasattr(target, "dtype") or target.dtype.is_floating_point:
            return   # soft targets: nothing to attribute
        if ph != "eval":
            if not grad:
                return
            S.grad_ce[ph] += 1
            k = S.grad_ce[ph]
            if not (k <= _SAMPLE_FIRST or k % _SAMPLE_EVERY == 0) or not S.index_ready.is_set():
                return
            rows, unres, n, _amb = _resolve(target)
            if rows:
                _emit({"e": "score", "ph": ph, "grad": True, "r": _tracer_lib().merge_ranges(rows),
                       "unres": unres, "n": n, "sampled": True})
            return
        if not grad:
            # scoring calls are many and small: keep a copy of the targets (no host sync) and
            # resolve them in batches, always before the next update is recorded
            S.sbuf.append((time.time(), target.detach().reshape(-1).clone()))
            S.sbuf_tokens += int(target.numel())
            if len(S.sbuf) >= 512 or S.sbuf_tokens >= (1 << 22):
                _flush_scores()
            return
        _flush_scores()
        rows, unres, n, amb = _resolve(target)
        r = _tracer_lib().merge_ranges(rows)
        S.grad_ce[ph] += 1
        S.pending.extend(r)
        S.pending_amb.extend(amb)
        S.pending_unres += unres
        ev = {"e": "score", "ph": ph, "grad": True, "r": r, "unres": unres, "n": n}
        if amb:
            ev["amb"] = amb
        _emit(ev)


def _flush_scores() -> None:
    """Resolve the buffered no-grad scoring calls (one host transfer) and emit their events."""
    if not S.sbuf:
        return
    import torch
    buf, S.sbuf, S.sbuf_tokens = S.sbuf, [], 0
    S.index_ready.wait()
    lib = _tracer_lib()
    sizes = [int(x.numel()) for _, x in buf]
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + n)
    if S.index is None:
        per = [([], n, []) for n in sizes]
    else:
        try:
            flat = torch.cat([x.to("cpu") if x.device != buf[0][1].device else x for _, x in buf])
        except Exception:
            flat = torch.cat([x.to("cpu") for _, x in buf])
        per = S.index.ranges_by_segment(flat.to("cpu").numpy(), bounds)
    for (t, _), n, (rows, unres, amb) in zip(buf, sizes, per):
        r = lib.merge_ranges(rows)
        ev = {"e": "score", "t": t, "ph": "eval", "grad": False, "r": r, "unres": unres, "n": n}
        if len(rows) != len(r):
            ev["rows"] = rows      # overlapping windows: each window's own range
        if amb:
            ev["amb"] = amb        # duplicated text: the same tokens also sit at these starts
        _emit(ev)


def _install_torch(torch) -> None:
    import torch.nn.functional as F

    try:
        is_compiling = torch.compiler.is_compiling
    except AttributeError:  # older torch
        def is_compiling():
            return False

    def wrap_loss(orig):
        def loss(input, target, *args, **kwargs):
            out = orig(input, target, *args, **kwargs)
            if not is_compiling():
                try:
                    _on_score(input, target)
                except Exception:
                    pass
            return out
        loss.__wrapped__ = orig
        loss.__name__ = orig.__name__
        loss.__doc__ = orig.__doc__
        return loss

    F.cross_entropy = wrap_loss(F.cross_entropy)
    F.nll_loss = wrap_loss(F.nll_loss)

    def step_hook(optimizer, args, kwargs):
        if _inside():
            return
        ph = _poll_phase(force=True)
        S.steps[ph] += 1
        if ph != "eval":
            return
        try:
            # collectives are asynchronous: wait for them so this step's time is after every
            # rank's contribution to it (scores on other ranks come before)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        except Exception:
            pass
        with _Busy():
            _flush_scores()
        _tl = _tracer_lib()
        ev = {"e": "step", "ph": ph, "r": _tl.merge_ranges(S.pending), "unres": S.pending_unres,
              "opt": type(optimizer).__name__}
        if S.pending_amb:
            ev["amb"] = S.pending_amb[:1000]
        _emit(ev)
        S.pending, S.pending_unres, S.pending_amb = [], 0, []

    try:
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        register_optimizer_step_pre_hook(step_hook)
    except Exception as e:
        _emit({"e": "error", "what": f"optimizer hook: {e}"[:200]})

    orig_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        if not _inside() and _poll_phase() == "eval":
            with _Busy():
                _flush_scores()
            _emit({"e": "bwd", "ph": "eval", "r": _tracer_lib().merge_ranges(S.pending)})
        return orig_backward(self, *args, **kwargs)

    torch.Tensor.backward = backward
    _start_index()


# ----------------------------------------------------------------------------- import watching


def _install_import_hook() -> None:
    import importlib.abc
    import importlib.util

    hooks = {"torch": _install_torch}

    class _PostImport(importlib.abc.MetaPathFinder):
        busy: set[str] = set()

        def find_spec(self, name, path=None, target=None):
            if name not in hooks or name in self.busy:
                return None
            self.busy.add(name)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                self.busy.discard(name)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            orig_exec = spec.loader.exec_module

            def exec_module(module):
                orig_exec(module)
                try:
                    hooks[name](module)
                except Exception as e:
                    _emit({"e": "error", "what": f"{name} hook: {type(e).__name__}: {e}"[:200]})

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PostImport())


def _summary() -> None:
    try:
        with _Busy():
            _flush_scores()
    except Exception:
        pass
    val_opens = sorted(p for p in S.open_counts if _classify(p)[0])
    _emit({"e": "summary", "ph": S.phase, "steps": S.steps, "ce": S.ce, "grad_ce": S.grad_ce,
           "quiet_opens": S.quiet_opens,
           "opens": {p: S.open_counts[p] for p in val_opens[:100]}}, flush=True)
    _flush()


def _chain_next_sitecustomize() -> None:
    """Run the sitecustomize we shadow, if the environment has one."""
    import importlib.machinery
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.origin and os.path.abspath(spec.origin) != os.path.abspath(__file__):
        import importlib.util
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except Exception:
            pass


def _install() -> None:
    if os.environ.get("PGOLF_TRACE_DISABLE") == "1":
        return
    builtins.open = _open
    io.open = _open
    os.open = _os_open
    _install_socket()
    _install_import_hook()
    sys.stdout = _WatchedStream(sys.stdout) if sys.stdout is not None else sys.stdout
    sys.stderr = _WatchedStream(sys.stderr) if sys.stderr is not None else sys.stderr
    _emit({"e": "start", "argv": [str(a)[:200] for a in getattr(sys, "argv", [])[:8]], "ph": S.phase})
    _poll_phase(force=True)
    import atexit
    atexit.register(_summary)


_install()
_chain_next_sitecustomize()
