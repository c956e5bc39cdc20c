"""Tracer overhead: one pgolf seed through the real runner, with and without the tracer.

    python bench/tracer_overhead.py --data DIR --tokenizer FILE [--steps 60] [--nproc 1]
                                    [--val-tokens 262144] [--cpu-tiny] [--repeats 1] [--ttt]

The submission is a one-line shim (`train_gpt.py` that runs pgolf.train) in a records-shaped
folder, so the runner does exactly what it does for a real submission: README command, working
copy, sandbox, tracer on PYTHONPATH. The validation split is cut to --val-tokens (a data folder of
links next to the real one) so the post-training evaluations stay short. Prints, per variant:
mean step time over the timed steps (from the run's own step lines, steps 1-2 skipped), the run's
eval_time lines, our wall clock, and for the traced run the TTT judgement of its trace.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rules.checks._runs import ttt_findings  # noqa: E402
from worker.reproduce import reproduce_seed  # noqa: E402
from worker.sandbox import SandboxConfig  # noqa: E402
from worker.tracer import read_shard, write_shard  # noqa: E402

STEP = re.compile(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms")
EVAL = re.compile(r"^(\S+) val_loss:\S+ val_bpb:\S+ .*eval_time:(\d+)ms")


def small_data(src: Path, dst: Path, val_tokens: int) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(glob.glob(str(src / "fineweb_train_*.bin"))):
        link = dst / Path(p).name
        if not link.exists():
            os.symlink(p, link)
    val = read_shard(sorted(glob.glob(str(src / "fineweb_val_*.bin")))[0])
    write_shard(dst / "fineweb_val_000000.bin", val[:val_tokens + 1])
    return dst


def shim(root: Path, env: dict[str, str], nproc: int) -> Path:
    sub = root / "2026-11-24_PgolfShim"
    sub.mkdir(parents=True, exist_ok=True)
    # the sandbox scrubs PYTHONPATH: the shim carries the repo and this host's extra paths itself
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    (sub / "train_gpt.py").write_text(f"import sys\nsys.path[:0] = {[str(REPO)] + extra!r}\n"
                                      "from pgolf.train import main\nmain()\n")
    envs = " ".join(f"{k}={v}" for k, v in env.items())
    launcher = "python train_gpt.py" if nproc == 1 else f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py"
    (sub / "README.md").write_text(f"# shim\n\n```bash\n{envs} {launcher}\n```\n")
    return sub


def summarize(lines: list[str], skip: int = 2) -> dict:
    steps = [(int(m.group(1)), int(m.group(2))) for m in map(STEP.match, lines) if m]
    out: dict = {"steps": len(steps)}
    if len(steps) > skip + 1:
        (s0, t0), (s1, t1) = steps[skip], steps[-1]
        out["ms_per_step"] = round((t1 - t0) / (s1 - s0), 2)
    out["eval_ms"] = {m.group(1): int(m.group(2)) for m in map(EVAL.match, lines) if m}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--val-tokens", type=int, default=262144)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-tokens", type=int, default=None, help="TRAIN_BATCH_TOKENS (default: pgolf's)")
    ap.add_argument("--cpu-tiny", action="store_true", help="a CPU-sized model (for a dry run)")
    ap.add_argument("--ttt", action="store_true", help="enable score-first TTT (traced and judged)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--run-timeout", type=float, default=1800)
    ap.add_argument("--no-isolate", action="store_true", help="no namespaces (diagnostics)")
    ap.add_argument("--pass-env", action="store_true", help="pass the whole host environment (diagnostics)")
    ap.add_argument("--only", choices=["traced", "untraced"], default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pgolf-tracer-bench-"))
    data = small_data(args.data.resolve(), work / "data", args.val_tokens)
    env = {"ITERATIONS": str(args.steps), "MAX_WALLCLOCK_SECONDS": "0", "VAL_LOSS_EVERY": "0",
           "TRAIN_LOG_EVERY": "1", "WARMUP_STEPS": "5", "RUN_ID": "bench"}
    if args.cpu_tiny:
        env.update(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
                   BIGRAM_VOCAB_SIZE="128", BIGRAM_DIM="32", XSA_LAST_N="2", ROPE_DIMS="8", VE_DIM="32",
                   VE_LAYERS="1", TRAIN_SEQ_LEN="128", EVAL_SEQ_LEN="128", TRAIN_BATCH_TOKENS="2048",
                   VAL_BATCH_SIZE="4096", GPTQ_CALIB_SAMPLES="2", COMPILE="0", SWA_ENABLED="0")
    if args.batch_tokens:
        env["TRAIN_BATCH_TOKENS"] = str(args.batch_tokens)
    if args.ttt:
        env.update(TTT_ENABLED="1", TTT_EPOCHS="1", TTT_CHUNK_TOKENS=str(max(args.val_tokens // 8, 4096)))
    sub = shim(work, env, args.nproc)
    results = []
    order = ([args.only] if args.only else ["traced", "untraced"]) * args.repeats
    for i, variant in enumerate(order):
        lines: list[str] = []
        cfg = SandboxConfig(timeout_s=args.run_timeout, isolate=not args.no_isolate,
                            extra_env_allow=tuple(os.environ) if args.pass_env else ())
        import worker.reproduce as rep
        orig = rep.run_sandboxed

        def run_sb(*a, _tr=(variant == "traced"), **k):
            return orig(*a, tracer=_tr, **k)
        rep.run_sandboxed = run_sb
        try:
            out = reproduce_seed(sub, 1337, args.nproc, data_dir=data, tokenizer=args.tokenizer,
                                 run_dir=work / f"run-{i}", cfg=cfg,
                                 sink=lambda s, line: lines.append(line))
        finally:
            rep.run_sandboxed = orig
        row = {"variant": variant, "status": out.record.status, "wall_s": out.record.wall_s,
               "network_isolated": out.record.network_isolated, "data_check": out.record.data_check,
               **summarize(lines)}
        if variant == "traced":
            tr = out.evidence.trace
            f = ttt_findings(tr)
            row["trace_events"] = len(tr)
            row["trace_bytes"] = Path(out.record.trace_file).stat().st_size if out.record.trace_file else 0
            row["ttt"] = {k: (len(v) if isinstance(v, list) else v) for k, v in f.items()}
            idx = [e for e in tr if e.get("e") == "val_index"]
            row["val_index_build_s"] = idx[0].get("build_s") if idx else None
        if out.record.status != "ok":
            row["tail"] = out.record.tail[-15:]
        results.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("variant    ms/step  eval_time_ms                                   wall_s(end)")
    for r in results:
        print(f"{r['variant']:<10} {r.get('ms_per_step', '-'):>7}  {json.dumps(r.get('eval_ms', {}))[:46]:<46} "
              f"{r['wall_s'].get('end')}")
    tr = [r["ms_per_step"] for r in results if r["variant"] == "traced" and "ms_per_step" in r]
    un = [r["ms_per_step"] for r in results if r["variant"] == "untraced" and "ms_per_step" in r]
    if tr and un:
        a, b = sum(tr) / len(tr), sum(un) / len(un)
        print(f"step-time overhead of the tracer: {100 * (a - b) / b:+.2f}% ({a:.2f} vs {b:.2f} ms/step)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
