"""Reproduce a submission's seeds in the sandbox with the tracer, then judge with the runs.

  pgolf-audit reproduce PATH --seeds 1337 42 2025 --nproc N [--data DIR] [--tokenizer FILE]
                        [--timeout S] [--policy P] [--run-dir DIR] [--calibrate] [--json]

Each seed runs the README's command (worker.readme_cmd) in a fresh copy of the folder
(worker.sandbox) with SEED, DATA_PATH and TOKENIZER_PATH set by us. The rules then run again with
the runs as evidence (rules.engine.context_for(..., runs=...)), plus the two run-only results
from rules.runs_judge (reproduction-matches-claims, hardware-calibration).

The service's GPU worker calls `run_seed(submission_id, seed, nproc, job_id)` (from
worker.tasks); it reads the folder from the blob store, streams the log into it while the run
goes, stores the trace, records the run, and queues judging once the job's last seed is done.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .readme_cmd import RunCommand, parse_run_command
from .sandbox import RunRecord, SandboxConfig, Sink, run_sandboxed

# compressed-model files a run leaves in its working copy (the artifact is code + this blob)
ARTIFACT_SUFFIXES = (".ptz", ".lzma", ".xz", ".zst", ".zstd", ".br", ".brotli", ".gz", ".lrz", ".bz2")


@dataclass
class SeedOutcome:
    record: RunRecord
    evidence: Any            # rules.context.RunEvidence
    command: RunCommand


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def run_command_for(folder: Path) -> RunCommand:
    readme = folder / "README.md"
    text = readme.read_text("utf-8", "replace") if readme.exists() else None
    return parse_run_command(text, _files(folder))


def measure_artifact(work: Path, original_files: set[str], script: str) -> tuple[int | None, dict[str, int]]:
    """(code bytes + largest new compressed model file, {new file: bytes}) in the working copy."""
    new: dict[str, int] = {}
    for p in work.rglob("*"):
        if p.is_file() and not p.is_symlink():
            rel = str(p.relative_to(work))
            if rel not in original_files:
                new[rel] = p.stat().st_size
    models = [b for f, b in new.items() if f.lower().endswith(ARTIFACT_SUFFIXES)]
    if not models:
        return None, new
    code = (work / script).stat().st_size if (work / script).exists() else 0
    return code + max(models), new


def _parse_log(path: str | None):
    if not path or not Path(path).exists():
        return None
    try:
        from rules.logs import parse_log
        return parse_log(Path(path).read_text("utf-8", "replace"), Path(path).name)
    except Exception:  # the log grammar is another module's; a parse failure is not a crash
        return None


def to_evidence(rec: RunRecord, seed: int | None, artifact_bytes: int | None,
                calibration: dict[str, Any] | None = None):
    from rules.context import RunEvidence

    from .tracer import read_trace
    trace = read_trace(rec.trace_file) if rec.trace_file else []
    return RunEvidence(seed=seed, status=rec.status, log_file=rec.log_file, parsed=_parse_log(rec.log_file),
                       wall_s=dict(rec.wall_s), artifact_bytes=artifact_bytes, gpu=dict(rec.gpu),
                       trace=trace, trace_file=rec.trace_file, network_isolated=rec.network_isolated,
                       calibration=calibration)


def reproduce_seed(folder: Path, seed: int, nproc: int | None, *, data_dir: Path, tokenizer: Path | None,
                   run_dir: Path, timeout_s: float | None = None, sink: Sink | None = None,
                   cfg: SandboxConfig | None = None, calibration: dict[str, Any] | None = None,
                   python: str = sys.executable) -> SeedOutcome:
    """One seed of `folder` in the sandbox; nothing here executes the submission in-process."""
    folder = Path(folder).resolve()
    cmd = run_command_for(folder)
    env = dict(cmd.env)
    env["SEED"] = str(seed)
    env["DATA_PATH"] = str(Path(data_dir).resolve())
    if tokenizer is not None:
        env["TOKENIZER_PATH"] = str(Path(tokenizer).resolve())
    cfg = cfg or SandboxConfig()
    if timeout_s is not None:
        cfg.timeout_s = timeout_s
    rec = run_sandboxed(cmd.argv(python, nproc), submission=folder, run_dir=run_dir, run_env=env,
                        data_dir=Path(data_dir).resolve(), cfg=cfg, sink=sink)
    artifact, new_files = measure_artifact(Path(rec.cwd), set(_files(folder)), cmd.script)
    if cmd.warnings:
        rec.message += "; README: " + "; ".join(cmd.warnings)
    return SeedOutcome(record=rec, evidence=to_evidence(rec, seed, artifact, calibration), command=cmd)


def judge(folder: Path, runs: list[Any], policy: str | None = None):
    """The verdict with runs as evidence, plus the run-only results (see rules.runs_judge)."""
    from rules.engine import audit, context_for

    return audit(context_for(folder, policy, runs=runs))  # the engine adds the run-only results


# ---------------------------------------------------------------------------------------- CLI


def _default_data() -> Path | None:
    for cand in (os.environ.get("PGOLF_DATA_DIR"), "/tmp/pgolf_data", "./data/datasets/fineweb10B_sp1024"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pgolf-audit reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--nproc", type=int, default=None, help="processes per run (default: the README's, else 1)")
    ap.add_argument("--data", type=Path, default=None, help="folder with fineweb_{train,val}_*.bin")
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per seed (default 1500)")
    ap.add_argument("--policy", default=None)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--calibrate", action="store_true", help="measure this node against the record first")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="do not echo the runs' output")
    args = ap.parse_args(argv)

    folder = Path(args.path)
    if not folder.is_dir():
        print(f"pgolf-audit reproduce: not_found: {folder} is not a folder", file=sys.stderr)
        return 3
    data = args.data or _default_data()
    if data is None or not data.is_dir():
        print("pgolf-audit reproduce: no_data: pass --data DIR (a folder with fineweb_val_*.bin) "
              "or set PGOLF_DATA_DIR", file=sys.stderr)
        return 3
    tokenizer = args.tokenizer or (Path(os.environ["PGOLF_TOKENIZER"]) if os.environ.get("PGOLF_TOKENIZER") else None)
    calibration = None
    if args.calibrate:
        from .calibration import calibrate
        calibration = calibrate()
        print(f"calibration: {calibration.get('ms_per_step')} ms/step, factor {calibration.get('factor')}",
              file=sys.stderr)
    run_root = args.run_dir or Path(tempfile.mkdtemp(prefix="pgolf-reproduce-"))
    echo: Sink | None = None if args.quiet else (lambda stream, line: print(f"[{stream}] {line}", file=sys.stderr))
    outcomes = []
    for seed in args.seeds:
        out = reproduce_seed(folder, seed, args.nproc, data_dir=data, tokenizer=tokenizer,
                             run_dir=run_root / f"seed-{seed}", timeout_s=args.timeout, sink=echo,
                             calibration=calibration)
        r = out.record
        print(f"seed {seed}: {r.status} ({r.message}) wall {r.wall_s} network "
              f"{'isolated' if r.network_isolated else 'NOT isolated'} data {r.data_check}", file=sys.stderr)
        outcomes.append(out)
    try:
        verdict = judge(folder, [o.evidence for o in outcomes], args.policy)
    except Exception as e:
        code = getattr(e, "code", None)
        if code:
            print(f"pgolf-audit reproduce: {code}: {getattr(e, 'message', e)}", file=sys.stderr)
            return 3
        raise
    body = verdict.to_json()
    body["reproduction"] = [{"seed": o.evidence.seed, **{k: v for k, v in o.record.to_json().items()
                                                          if k not in ("tail",)}} for o in outcomes]
    if args.json:
        print(json.dumps(body, indent=2, default=str))
    else:
        print(f"verdict: {body['outcome']} (policy {body['policy']})")
        for r in body["rules"]:
            print(f"  {r['code']} {r['id']:<30} {r['outcome']:<14} [{r.get('basis')}] {r['message']}")
    from rules.model import EXIT_CODES
    return EXIT_CODES.get(body["outcome"], 2)


# ------------------------------------------------------------------------------ service (GPU worker)


def _settings():
    from store.settings import get_settings
    return get_settings()


def run_seed(submission_id: str, seed: int | None, nproc: int, job_id: int) -> str:
    """One seed for the service: folder from the blob store, log streamed into it, run recorded,
    judging queued when the job's last run is finished. Returns the run's status."""
    from store import repo
    from store.blobs import BlobStore
    from store.db import session_scope
    from store.models import AuditJob

    settings = _settings()
    blobs = BlobStore(settings.blob_dir)
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        if sub is None:
            return "missing"
        run = next((r for r in sub.runs if r.job_id == job_id and r.seed == seed), None)
        if run is None:
            run = repo.create_run(s, sub, seed=seed, nproc=nproc, job=s.get(AuditJob, job_id),
                                  log_key=BlobStore.log_key(submission_id, f"seed-{seed}"))
        if run.status not in ("queued", "running"):
            return run.status           # a redelivered message for a finished run
        run.status = "running"
        run_id, log_key, folder_key = run.id, run.log_key, sub.folder_key
    folder = blobs.path(folder_key) if folder_key else None
    data = Path(getattr(settings, "data_dir", None) or os.environ.get("PGOLF_DATA_DIR", "") or "/nonexistent")
    tok = getattr(settings, "tokenizer_path", None) or os.environ.get("PGOLF_TOKENIZER")
    status, error, rec, ev = "infra_error", None, None, None
    if folder is None or not folder.is_dir():
        error = "the submission's folder is not in the blob store"
    elif not data.is_dir():
        error = f"no data folder on this worker ({data}); set PGOLF_DATA_DIR"
    else:
        def sink(stream: str, line: str) -> None:
            blobs.append_line(log_key, line if stream == "stdout" else f"[stderr] {line}")
        with tempfile.TemporaryDirectory(prefix=f"pgolf-run-{run_id}-") as rd:
            out = reproduce_seed(folder, seed if seed is not None else 1337, nproc, data_dir=data,
                                 tokenizer=Path(tok) if tok else None, run_dir=Path(rd), sink=sink,
                                 timeout_s=_run_timeout(settings))
            rec, ev = out.record, out.evidence
            status = rec.status
            error = None if status == "ok" else rec.message
            trace_key = None
            if rec.trace_file and Path(rec.trace_file).exists():
                trace_key = blobs.put_file(rec.trace_file)
    with session_scope(settings.database_url) as s:
        sub = repo.get_submission(s, submission_id)
        run = next((r for r in sub.runs if r.id == run_id), None) if sub else None
        if run is None:
            return "missing"
        gpu = dict(rec.gpu) if rec else {}
        if rec is not None:
            gpu["sandbox"] = {"network_isolated": rec.network_isolated, "isolation": rec.isolation,
                              "data_check": rec.data_check, "limits": rec.limits,
                              "host": socket.gethostname()}
        repo.finish_run(s, run, status=status, exit_code=rec.returncode if rec else None,
                        timings=dict(rec.wall_s) if rec else None, gpu=gpu,
                        artifact_bytes=ev.artifact_bytes if ev else None,
                        trace_key=trace_key if rec else None, error=error)
        siblings = [r for r in sub.runs if r.job_id == job_id]
        done = all(r.status not in ("queued", "running") for r in siblings)
        job = s.get(AuditJob, job_id)
        if done and job is not None and job.state not in ("done", "failed", "cancelled"):
            try:
                repo.finish_job(s, job, "done")
            except Exception:
                pass
    if done:
        _queue_judge(submission_id)
    return status


def _run_timeout(settings) -> float | None:
    """Seconds one seed may run before its whole process group is killed: the settings field
    `run_timeout_s` (env PGOLF_AUDIT_RUN_TIMEOUT_S); None keeps the sandbox's default budget."""
    value = settings.run_timeout_s
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _queue_judge(submission_id: str) -> None:
    try:
        from .app import TASK_JUDGE, celery_app
        celery_app.send_task(TASK_JUDGE, args=[submission_id])
    except Exception:
        # embedded mode without a broker: judge in this process
        from .tasks import run_judge
        run_judge(submission_id)


run_seed_task = run_seed   # the name the brief uses


if __name__ == "__main__":
    sys.exit(main())
