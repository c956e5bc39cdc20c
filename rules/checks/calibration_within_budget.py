"""PG204 calibration-within-budget — quantization calibration and any other compute on training
data happen inside the 600 s training budget.

Rulings: README (no training data during evaluation "unless you pay for those bits"); valerio-oai
on #593/#609 as quoted in the #728/#1019 write-ups ("your implementation reuses training data for
[GPTQ calibration], meaning it accesses training data at eval time, which is forbidden"); the
`GPTQ_RESERVE_SECONDS` compliance re-runs (#1868 re-ran #1851 with an 8 s reserve: loop ≈592 s,
Hessians done ≈595.5 s; #1950; #1529's corrected mean). Data-free calibration after the cap is
accepted: #1019 (AR self-generated calibration) merged, record #1204 logs
`wallclock:post_gptq total_elapsed:856.2s train_budget:600.0s`.

Decides:
- from logs: `train_time + GPTQ:collected … in Xs` over 600 s while calibration uses training data
  → fail (evidence: both log lines), or needs_review when a GPTQ reserve was taken but was too
  small (the #1851 → #1868 case); `gptq:reserving` with the sum inside 600 s → pass;
  self-generated calibration (`gptq:generated`, `wallclock:post_gptq`) → pass;
- from code: reads of the training loader / `train_files` after the training loop (calibration,
  temperature fitting, n-gram prefill) → fail unless a reserve is taken off the wallclock cap
  (`GPTQ_RESERVE_SECONDS`-style switch > 0 under the logged configuration) → pass.
Reads on a path switched off by the configuration do not count (said so). No script and no
calibration lines in the logs: not_applicable.
"""
from __future__ import annotations

import sys

from ..analysis import program_for
from ..analysis.env import UNKNOWN
from ..analysis.facts import log_evidence, train_data_reads
from ..analysis.taint import is_train_data_name
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import result, safe_check

ID = "calibration-within-budget"
CODE = "PG204"
TITLE = "Calibration on training data fits the training budget"

BUDGET_S = 600.0


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _self_generated(log) -> bool:
    src = (getattr(log, "gptq_calib_source", None) or "").lower()
    if "self" in src or "generated" in src or src == "ar":
        return True
    # `wallclock:post_gptq total_elapsed:… train_budget:…` is the data-free (AR) calibration's line (#1204)
    return getattr(log, "post_train_elapsed_s", None) is not None and src != "training data"


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    log_fail: list[Evidence] = []
    log_msgs: list[str] = []
    log_ok: list[str] = []
    worst = None
    for log in ctx.submission.logs:
        tt, coll = getattr(log, "train_time_ms", None), getattr(log, "gptq_collect_s", None)
        if _self_generated(log):
            log_ok.append(f"{log.file}: calibration is self-generated (no training data)")
            continue
        if tt is None or coll is None:
            continue
        total = tt / 1000.0 + coll
        worst = max(worst or 0.0, total)
        if total > BUDGET_S:
            log_msgs.append(f"{log.file}: training {tt / 1000:.1f}s + Hessian collection {coll:.1f}s = "
                            f"{total:.1f}s > {BUDGET_S:.0f}s")
            log_fail += [log_evidence(log, "train_time_ms", f"train_time:{tt:.0f}ms"),
                         log_evidence(log, "gptq_collect_s", f"GPTQ:collected Hessians in {coll}s")]
        else:
            log_ok.append(f"{log.file}: training + Hessians = {total:.1f}s"
                          + (" (GPTQ reserve)" if getattr(log, "gptq_reserve_ms", None) else ""))
    prog, early = program_for(me, ctx)
    if log_fail and prog is not None and not [r for r in train_data_reads(prog, "eval") if r[2]] \
            and prog.flow.train_end is not None:
        log_fail, log_ok = [], log_ok + ["the logged calibration runs after training but the script reads no "
                                         "training data after the loop (data-free calibration)"]
    if log_fail:
        reserved = any(getattr(log, "gptq_reserve_ms", None) for log in ctx.submission.logs) or \
            (prog is not None and _reserve_seconds(prog))
        if reserved:
            # the author took a reserve that turned out too small: #1851 was merged like this and
            # re-run for compliance with a larger reserve (#1868); #2135 was admitted under grace
            return result(me, "needs_review", "calibration on training data ends after the training budget despite "
                          "a GPTQ reserve (too small; #1868 re-ran #1851 with 8 s): " + log_msgs[0],
                          measured=round(worst, 1) if worst else None, limit=BUDGET_S, evidence=log_fail[:6])
        return result(me, "fail", "calibration on training data ends after the training budget: " + log_msgs[0],
                      measured=round(worst, 1) if worst else None, limit=BUDGET_S, evidence=log_fail[:6])

    if early is not None:
        if log_ok:
            return result(me, "pass", log_ok[0], measured=round(worst, 1) if worst else None, limit=BUDGET_S)
        return early
    reads = train_data_reads(prog, "eval")
    running = sorted(((n, name) for n, name, runs in reads if runs),
                     key=lambda r: (not is_train_data_name(r[1]), getattr(r[0], "lineno", 0)))
    off = [(n, name) for n, name, runs in reads if not runs]
    reserve = _reserve_seconds(prog)
    if running:
        node, name = running[0]
        ev = [prog.evidence(n, f"reads {nm} after the training loop") for n, nm in running[:4]]
        if reserve:
            return result(me, "pass", f"training data ({name}) is read after the loop, inside the budget: "
                          f"a {reserve:g}s reserve is taken off the wallclock cap", evidence=ev)
        return result(me, "fail", f"training data ({name}) is read after the training loop ends, outside the "
                      "600 s budget, and no reserve is taken off the wallclock cap", evidence=ev,
                      limit=BUDGET_S)
    if off:
        return result(me, "pass", "a post-training read of training data exists but is off under the logged "
                      "configuration", evidence=[prog.evidence(off[0][0], "switched off")])
    if log_ok:
        return result(me, "pass", log_ok[0], measured=round(worst, 1) if worst else None, limit=BUDGET_S)
    return result(me, "pass", "no training data is read after the training loop")


def _reserve_seconds(prog) -> float | None:
    for r in prog.switches.env_reads_matching("RESERVE"):
        v = prog.switches.read_state(r)
        if v is UNKNOWN or v is None:
            continue
        try:
            s = float(v)
        except (TypeError, ValueError):
            continue
        if "MS" in r.var.upper().split("_"):
            s /= 1000.0
        if s > 0:
            return s
    return None
