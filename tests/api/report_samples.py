"""Sample verdicts and logs for the report tests (built here, shaped like verdict.md).

Logs use the two real step-line shapes of record logs ("step:N/M train_loss:X ..." and
"N/M train_loss: X ..."), so the curves go through the same log grammar as real folders.
"""
from __future__ import annotations

import math

RULE_IDS = [
    ("package-layout", "PG101"), ("claims-match-logs", "PG102"), ("artifact-size", "PG201"),
    ("train-time", "PG202"), ("eval-time", "PG203"), ("calibration-within-budget", "PG204"),
    ("seed-statistics", "PG301"), ("ttt-score-first", "PG401"), ("ngram-target-in-key", "PG402"),
    ("two-pass-rescore", "PG403"), ("gptq-on-validation", "PG404"),
    ("validation-in-training", "PG405"), ("normalized-distribution", "PG406"),
    ("byte-accounting", "PG407"), ("network-access", "PG408"),
]

XSS = "<script>alert('xss')</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'


def step_log(seed: int, steps: int = 2000, every: int = 100, style: str = "colon",
             extra: str = "") -> str:
    """A plausible training log: decaying train loss, val checkpoints every 500 steps."""
    lines = [f"seed:{seed}", extra] if extra else [f"seed:{seed}"]
    for step in range(0, steps + 1, every):
        loss = 2.3 + 4.6 * math.exp(-step / 180) + 0.01 * ((seed + step) % 7) / 7
        t_ms = step * 290.0
        if style == "colon":
            if step:
                lines.append(f"step:{step}/{steps} train_loss:{loss:.4f} train_time:{t_ms:.0f}ms step_avg:290.00ms")
            if step % 500 == 0:
                bpb = 1.09 + 2.9 * math.exp(-step / 150) + 0.0003 * (seed % 5)
                lines.append(f"step:{step}/{steps} val_loss:{bpb * 2.18:.4f} val_bpb:{bpb:.4f} "
                             f"train_time:{t_ms:.0f}ms step_avg:290.00ms")
        else:
            if step:
                lines.append(f"{step}/{steps} train_loss: {loss:.4f} train_time: {t_ms / 60000:.1f}m tok/s: 8300000")
            if step % 500 == 0:
                bpb = 1.09 + 2.9 * math.exp(-step / 150) + 0.0003 * (seed % 5)
                lines.append(f"{step}/{steps} val_loss: {bpb * 2.18:.4f} val_bpb: {bpb:.4f}")
    lines.append(f"stopping_early: wallclock_cap train_time: {steps * 290}ms step: {steps}/{steps}")
    lines.append(f"final_int6_sliding_window_exact val_loss:2.31000000 val_bpb:{1.0612 + seed % 7 * 1e-4:.8f}")
    return "\n".join(lines) + "\n"


def sample_verdict(*, malicious: bool = False, with_runs: bool = True) -> tuple[dict, dict[str, str]]:
    """A failing verdict over three seeds with evidence, statistics under both policies and runs."""
    seeds_ids = [42, 314, 1234]
    logs = {f"train_seed{s}.log": step_log(s, style="colon" if i != 1 else "plain",
                                           extra=XSS if malicious else "")
            for i, s in enumerate(seeds_ids)}
    seeds = [{"seed": s, "log": f"train_seed{s}.log", "val_bpb": 1.0612 + i * 4e-4,
              "val_loss": 2.3102 + i * 1e-3, "artifact_bytes": 15_951_000 + 700 * i,
              "code_bytes": 31_385, "train_time_s": 591.2 + i, "eval_time_s": 480.5 + 20 * i,
              "steps": 2000} for i, s in enumerate(seeds_ids)]
    seeds[2]["artifact_bytes"] = 16_000_086   # one over the cap
    rules = []
    for rid, code in RULE_IDS:
        rules.append({"id": rid, "code": code, "title": rid.replace("-", " "), "outcome": "pass",
                      "message": f"{rid}: nothing found", "measured": None, "limit": None,
                      "evidence": [], "basis": "claimed"})
    by_id = {r["id"]: r for r in rules}
    by_id["artifact-size"].update(
        outcome="fail", measured=16_000_086, limit=16_000_000,
        message="Seed 1234's artifact is 16,000,086 bytes, over the 16,000,000-byte cap.",
        evidence=[{"source": "log", "file": "train_seed1234.log", "line": 77,
                   "text": "Total submission size quantized+brotli: 16000086 bytes"}])
    by_id["calibration-within-budget"].update(
        outcome="needs_review", measured=1121.067, limit=600,
        message="artifact_production_wallclock is 1121 s; calibration may be outside the budget.",
        evidence=[{"source": "code", "file": "train_gpt.py", "line": 1412,
                   "text": "    hessians = collect_hessians(model, calib_loader)"},
                  {"source": "log", "file": "train_seed42.log", "line": 200,
                   "text": "artifact_production_wallclock: 1121.067s (must be < 600.0)"}])
    by_id["ngram-target-in-key"].update(outcome="warn", message="A hashed lookup was found; key looks legal.")
    for rid in ("ttt-score-first", "two-pass-rescore", "normalized-distribution"):
        by_id[rid].update(outcome="not_applicable", message="no training script in the folder")
    if malicious:
        by_id["package-layout"].update(
            outcome="needs_review", message=f"README says {XSS}",
            evidence=[{"source": "readme", "file": f"README{XSS_IMG}.md", "line": 3, "text": XSS}])
    verdict = {
        "schema": "pgolf-audit/verdict/1",
        "outcome": "fail",
        "policy": "leaderboard-2026-04",
        "submission": {"name": (f"Evil {XSS}" if malicious else "SmearGate BOS fix, 3 seeds"),
                       "author": "someone", "github_id": "someone", "track": "10min_16mb",
                       "claimed_val_bpb": 1.0616, "sha256": "ab" * 32,
                       "files": ["README.md", "submission.json", *logs]},
        "rules": rules,
        "seeds": seeds,
        "statistics": {
            "n": 3, "mean_bpb": 1.0616, "std_bpb": 0.0004,
            "baseline": {"name": "PR1787 PolarNS", "seeds": [1.0631, 1.0636, 1.0635], "pr": 1787},
            "test": "welch-one-sided", "p_value": 0.0021, "alpha": 0.25, "margin_bpb": None,
            "significant": True,
            "readings": {
                "readme-2026-03": {"p_value": 0.31, "alpha": 0.01, "margin_bpb": 0.0072, "significant": False},
                "leaderboard-2026-04": {"p_value": 0.0021, "alpha": 0.25, "margin_bpb": 0.0, "significant": True},
            },
        },
        "runs": [],
    }
    if with_runs:
        logs["runs/r1/train.log"] = step_log(42, steps=1800)
        verdict["runs"] = [
            {"id": "r1", "seed": 42, "status": "ok", "val_bpb": 1.06151, "log": "runs/r1/train.log",
             "wall_s": {"start": 0.0, "first_step": 12.5, "train_end": 601.2, "end": 1130.4},
             "artifact_bytes": 15_949_701, "gpu": {"name": "NVIDIA H100 80GB HBM3", "count": 8, "driver": "550.54"},
             "network_isolated": True, "trace_file": "trace.jsonl", "basis": "reproduced"},
            {"id": "r2", "seed": 314, "status": "timeout", "reason": "killed after 1300 s",
             "wall_s": {"start": 0.0}},
        ]
    return verdict, logs
