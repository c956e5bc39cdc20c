"""Results that exist only when a submission was reproduced (appended to the verdict's rules).

reproduction-matches-claims (PG501)
  For each reproduced seed, the run's scored val_bpb against the submitted log of the same seed,
  and the reproduced mean against the claimed mean. Tolerance: max(3 x the claimed seeds' sample
  std, 0.002 bpb). The 0.002 floor is the run-to-run spread seen on one configuration across
  hosts (rules.md Rule 2: step counts differ 0.5-1% between hosts, which moves bpb by ~1e-3).
  Outside the tolerance on a calibrated, normal-speed node: fail. On a node that calibration found
  slow (fewer steps in the wallclock): needs_review, naming the node. A run that did not finish:
  needs_review (the claim is neither confirmed nor refuted).

hardware-calibration (PG502)
  A short reference run of pgolf on the same node (worker/calibration.py) measured against the
  record's 87.4 ms/step on 8xH100 SXM (pipeline.md section 10), scaled by model size when the
  calibration config is smaller. Within 10%: pass. Slower: warn, naming the node, so time results
  are read as the node's, not the submission's. No calibration: not_applicable.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from .checks._base import result
from .context import AuditContext
from .model import Evidence, RuleResult

REPRODUCTION = SimpleNamespace(ID="reproduction-matches-claims", CODE="PG501",
                               TITLE="Reproduced score matches the claimed score")
CALIBRATION = SimpleNamespace(ID="hardware-calibration", CODE="PG502",
                              TITLE="Reproduction hardware calibrated against the record's node")
TOL_FLOOR = 0.002
SLOW_FACTOR = 1.10
RECORD_MS_PER_STEP = 87.4


def run_results(ctx: AuditContext) -> list[RuleResult]:
    """Both results; empty without runs."""
    if not ctx.runs:
        return []
    return [reproduction_matches_claims(ctx), hardware_calibration(ctx)]


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _claimed_by_seed(ctx: AuditContext) -> dict[Any, float]:
    out: dict[Any, float] = {}
    try:
        from .checks._seedlogs import ctx_seed_logs
        for s in ctx_seed_logs(ctx).seeds:
            if s.val_bpb is not None and s.seed is not None:
                out[s.seed] = float(s.val_bpb)
    except Exception:  # noqa: BLE001 - fall back to the raw logs below
        pass
    # seeds the grouping did not count (e.g. eval-only logs) still carry a claimed score
    for lg in ctx.submission.logs:
        if lg.seed is not None and lg.val_bpb is not None:
            out.setdefault(lg.seed, float(lg.val_bpb))
    return out


def _slow(ctx: AuditContext) -> str | None:
    for r in ctx.runs:
        cal = r.calibration or {}
        f = cal.get("factor")
        if isinstance(f, (int, float)) and f > SLOW_FACTOR:
            return f"node {cal.get('node', '?')} is {f:.2f}x slower than the record's hardware"
    return None


def reproduction_matches_claims(ctx: AuditContext) -> RuleResult:
    claimed = _claimed_by_seed(ctx)
    spread = _std(list(claimed.values()))
    tol = max(3 * spread, TOL_FLOOR)
    ev: list[Evidence] = []
    diffs: list[float] = []
    unfinished = []
    reproduced: list[float] = []
    compared_claims: list[float] = []
    for r in ctx.runs:
        bpb = r.parsed.val_bpb if r.parsed is not None else None
        if r.status != "ok" or bpb is None:
            unfinished.append(r)
            ev.append(Evidence(source="run", file=r.log_file,
                               text=f"seed {r.seed}: run {r.status}, no reproduced score"))
            continue
        reproduced.append(bpb)
        c = claimed.get(r.seed)
        if c is None:
            ev.append(Evidence(source="run", file=r.log_file,
                               text=f"seed {r.seed}: reproduced {bpb:.5f} (no submitted log for this seed)"))
            continue
        compared_claims.append(c)
        diffs.append(bpb - c)
        ev.append(Evidence(source="run", file=r.log_file,
                           text=f"seed {r.seed}: reproduced {bpb:.5f} vs claimed {c:.5f} ({bpb - c:+.5f})"))
    if not reproduced:
        return result(REPRODUCTION, "needs_review", "No reproduced run finished with a score.",
                      evidence=ev, basis="reproduced")
    if not diffs:
        return result(REPRODUCTION, "needs_review", "No reproduced seed has a submitted log to compare with.",
                      evidence=ev, basis="reproduced")
    mean_diff = sum(reproduced) / len(reproduced) - sum(compared_claims) / len(compared_claims) \
        if len(compared_claims) == len(reproduced) else sum(diffs) / len(diffs)
    worst = max(diffs, key=abs)
    ev.append(Evidence(source="run", text=f"mean difference {mean_diff:+.5f} bpb; tolerance {tol:.4f} "
                                          f"(max(3 x claimed std {spread:.5f}, {TOL_FLOOR}))"))
    outside = abs(worst) > tol or abs(mean_diff) > tol
    if outside:
        slow = _slow(ctx)
        if slow:
            return result(REPRODUCTION, "needs_review", f"Reproduced scores differ from the claims by up to "
                          f"{worst:+.4f} bpb, but {slow}.", measured=round(worst, 6), limit=round(tol, 6),
                          evidence=ev, basis="reproduced")
        return result(REPRODUCTION, "fail", f"Reproduced scores differ from the claims by up to {worst:+.4f} bpb "
                      f"(tolerance {tol:.4f}).", measured=round(worst, 6), limit=round(tol, 6), evidence=ev,
                      basis="reproduced")
    if unfinished:
        return result(REPRODUCTION, "needs_review", f"{len(diffs)} reproduced seed(s) match the claims; "
                      f"{len(unfinished)} run(s) did not finish.", measured=round(worst, 6),
                      limit=round(tol, 6), evidence=ev, basis="reproduced")
    return result(REPRODUCTION, "pass", f"Reproduced scores match the claims within {tol:.4f} bpb "
                  f"(largest difference {worst:+.5f}).", measured=round(worst, 6), limit=round(tol, 6),
                  evidence=ev, basis="reproduced")


def hardware_calibration(ctx: AuditContext) -> RuleResult:
    cals = [r.calibration for r in ctx.runs if r.calibration]
    if not cals:
        return result(CALIBRATION, "not_applicable", "This reproduction ran without a calibration run.",
                      basis="reproduced")
    ev = []
    worst = None
    for cal in cals:
        f = cal.get("factor")
        ev.append(Evidence(source="run", text=(f"node {cal.get('node', '?')} ({cal.get('gpu') or 'cpu'}): "
                                               f"{cal.get('ms_per_step')} ms/step, expected "
                                               f"{cal.get('expected_ms_per_step')} ms/step on the record's "
                                               f"hardware, factor {f}")[:300]))
        if isinstance(f, (int, float)) and (worst is None or f > worst["factor"]):
            worst = cal
    if worst is None:
        return result(CALIBRATION, "needs_review", "The calibration run produced no step time.", evidence=ev,
                      basis="reproduced")
    f = float(worst["factor"])
    if f > SLOW_FACTOR:
        return result(CALIBRATION, "warn", f"Node {worst.get('node', '?')} runs the reference {f:.2f}x slower "
                      "than the record's 8xH100 SXM; time and score differences are the node's, not the "
                      "submission's.", measured=round(f, 3), limit=SLOW_FACTOR, evidence=ev, basis="reproduced")
    return result(CALIBRATION, "pass", f"Node {worst.get('node', '?')} matches the record's hardware "
                  f"(factor {f:.2f}).", measured=round(f, 3), limit=SLOW_FACTOR, evidence=ev, basis="reproduced")
