"""Issue 6's pipeline at reduced scale, on what this machine has (CPU, gloo).

The full-scale run (pgolf at the record's configuration on 8 GPUs, seeds 1337/42/2025, through
`pgolf-audit reproduce`) needs an 8-GPU node. This script runs the same path end to end with a
tiny configuration: it writes a records folder whose `train_gpt.py` runs `pgolf.train`, makes a
small corpus, and calls `pgolf-audit reproduce --seeds 1337 42 2025 --nproc N` (torchrun, N
processes on gloo — the distributed code path the 8-GPU run takes with NCCL), then prints per-seed
step time, steps, train time, artifact bytes, val_bpb, their spread, and the verdict.

  python bench/full_scale_reduced.py [--nproc 2] [--iterations 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_ENV = ("VOCAB_SIZE=320 NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 "
            "BIGRAM_VOCAB_SIZE=128 BIGRAM_DIM=32 XSA_LAST_N=2 ROPE_DIMS=8 VE_DIM=32 VE_LAYERS=1 "
            "TRAIN_SEQ_LEN=128 EVAL_SEQ_LEN=128 TRAIN_BATCH_TOKENS=4096 VAL_BATCH_SIZE=8192 "
            "ITERATIONS={iters} WARMUP_STEPS=1 VAL_LOSS_EVERY=0 MAX_WALLCLOCK_SECONDS=600 "
            "GPTQ_CALIB_SAMPLES=2 COMPILE=0 SWA_ENABLED=0")


def _reproduce(sub: Path, nproc: int, data: Path, tok: Path, run_dir: Path) -> dict | None:
    out = subprocess.run([sys.executable, "-m", "api.cli", "reproduce", str(sub), "--seeds", "1337", "42",
                          "2025", "--nproc", str(nproc), "--data", str(data), "--tokenizer", str(tok),
                          "--run-dir", str(run_dir), "--json", "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=1800)
    try:
        return json.loads(out.stdout)
    except ValueError:
        print(out.stdout[-3000:], out.stderr[-3000:])
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=6)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from pgolf.bench import make_corpus

    with tempfile.TemporaryDirectory(prefix="pgolf-issue6-") as tmp:
        tmp = Path(tmp)
        data, tok = make_corpus(tmp / "corpus")
        sub = tmp / "records" / "track_10min_16mb" / "2026-11-24_PgolfRecordStack_Reduced"
        sub.mkdir(parents=True)
        (sub / "train_gpt.py").write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
                                          "from pgolf.train import main\nmain()\n")
        env = TINY_ENV.format(iters=args.iterations)
        (sub / "README.md").write_text(
            "# pgolf record stack, reduced scale\n\n```bash\n"
            f"{env} torchrun --standalone --nproc_per_node={args.nproc} train_gpt.py\n```\n")
        t0 = time.perf_counter()
        # 1. the participant's runs: three seeds through the runner, logs kept
        first = _reproduce(sub, args.nproc, data, tok, tmp / "runs1")
        if first is None:
            return 1
        seeds = {}
        for r in first.get("runs") or []:
            log = tmp / "runs1" / f"seed-{r['seed']}" / "run.log"
            if log.is_file():
                (sub / f"train_seed{r['seed']}.log").write_text(log.read_text("utf-8", "replace"))
                seeds[str(r["seed"])] = {"val_bpb": r.get("val_bpb"), "val_loss": r.get("val_loss")}
        bpbs = [v["val_bpb"] for v in seeds.values() if v["val_bpb"] is not None]
        (sub / "submission.json").write_text(json.dumps({
            "author": "pgolf-audit", "github_id": "pgolf-audit", "name": "pgolf record stack (reduced)",
            "date": "2026-11-24", "track": "10min_16mb", "seed_results": seeds,
            "val_bpb": statistics.mean(bpbs) if bpbs else None}, indent=1))
        # 2. the audit: the complete folder reproduced again and judged with both kinds of evidence
        verdict = _reproduce(sub, args.nproc, data, tok, tmp / "runs2")
        wall = time.perf_counter() - t0
        if verdict is None:
            return 1
    runs = verdict.get("runs") or []
    print(f"pgolf-audit reproduce, 3 seeds, nproc {args.nproc} (gloo), {args.iterations} steps each, "
          f"twice (runs, then the audit of the complete folder): {wall:.1f} s wall")
    print(f"{'seed':>6} {'status':>8} {'steps':>6} {'step ms':>8} {'train s':>8} {'artifact B':>11} {'val_bpb':>11}")
    bpbs = []
    for r in runs:
        steps, train_ms = r.get("steps"), r.get("train_time_ms")
        step_ms = (train_ms / steps) if train_ms and steps else None
        bpb = r.get("val_bpb")
        if bpb is not None:
            bpbs.append(bpb)
        print(f"{r.get('seed')!s:>6} {r.get('status')!s:>8} {steps!s:>6} "
              f"{(f'{step_ms:.1f}' if step_ms else '-'):>8} {(f'{train_ms/1000:.2f}' if train_ms else '-'):>8} "
              f"{r.get('artifact_bytes')!s:>11} {(f'{bpb:.6f}' if bpb else '-'):>11}")
    if len(bpbs) >= 2:
        print(f"val_bpb mean {statistics.mean(bpbs):.6f}, sample std {statistics.stdev(bpbs):.6f}")
    print(f"verdict: {verdict.get('outcome')}")
    for rule in verdict.get("rules", []):
        if rule["outcome"] != "pass":
            print(f"  {rule['code']} {rule['id']}: {rule['outcome']} — {rule['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
