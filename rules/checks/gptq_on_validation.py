"""PG404 gptq-on-validation — no quantization calibration on validation tokens.

Rulings: PR #728's validation-calibrated files were pulled and the submission recreated as #1019
"at @valerio-oai's request" with AR self-generated calibration only (merged 2026-03-30);
valerio-oai on #677 (2026-03-27) closed "illegal TTT and GPTQ" PRs; README (2cff08e1a): no access
to validation data during training. Calibration statistics (Hessians, activation scales) computed
on validation tokens are validation data shaping the shipped weights.

Fires (fail) on: a calibration / Hessian-collection function (`collect_hessians`, `gptq_calibrate`,
`calibrate_*`, AWQ scales...) that is called with validation-derived data or that reads validation
shards itself (`DistributedTokenLoader(args.val_files, ...)`) — including a calibrator imported from a
helper module (not defined in the script) whose name says so and which is given validation data —, an env switch such as
`GPTQ_CALIB_SOURCE` resolving to `val` under the logged configuration, or a log saying the
calibration source is validation. Does not fire on: calibration from the training loader (PG204
judges its timing), AR self-generated calibration (#1019), a validation-calibration branch that the
env default / logged configuration switches off (the message says it exists but is off).
No training script and no log statement: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import program_for
from ..analysis.env import UNKNOWN
from ..analysis.index import dotted, walk_own
from ..analysis.taint import is_val_name
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import log_ev, result, safe_check

ID = "gptq-on-validation"
CODE = "PG404"
TITLE = "Quantization is not calibrated on validation data"

EVAL_FN = re.compile(r"(eval|score|ttt|test)", re.I)
CALIB_FN = re.compile(r"(hessian|calib|gptq|awq|smoothquant|collect_stats|act_scale|quant_stats)", re.I)


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    for log in ctx.submission.logs:
        src = (getattr(log, "gptq_calib_source", None) or "").lower()
        if src in ("val", "validation"):
            ll = log.where.get("gptq_calib_source") if getattr(log, "where", None) else None
            return result(me, "fail", f"{log.file} says GPTQ calibration used validation data",
                          evidence=[log_ev(log.file, ll.line if ll else None, ll.text if ll else f"calibration source: {src}")])
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    sw, taint, index = prog.switches, prog.taint, prog.index
    fails: list[tuple[str, list[Evidence]]] = []
    offs: list[Evidence] = []

    # 1. an env switch selecting the calibration source
    for r in sw.env_reads_matching("CALIB"):
        if not re.search(r"SOURCE|DATA|SPLIT|FROM|SET", r.var.upper()):
            continue
        v = sw.read_state(r)
        if v is not UNKNOWN and isinstance(v, str) and v.strip().lower() in ("val", "valid", "validation"):
            fails.append((f"{r.var} selects validation data for calibration", [prog.evidence(r.line)]))
        elif v is not UNKNOWN and _has_val_branch(prog):
            offs.append(prog.evidence(r.line, f"{r.var}={v!s}: the validation-calibration path is off"))

    # 2. calibration functions fed validation data, or reading it themselves (in code that runs)
    reach = prog.flow.reachable("any")

    def runs(fi) -> bool:
        return prog.flow.in_chain(fi) or bool(reach.get(fi.qualname, (None, False))[1])

    calib = [fi for fi in index.all_functions() if CALIB_FN.search(fi.name)
             and not EVAL_FN.search(fi.name)]
    calib_names = {fi.qualname for fi in calib}
    for fi in index.all_functions():
        if not runs(fi):
            continue
        for call in fi.calls:
            resolved = index.resolve_call(call)
            targets = [f"{t.name}()" for t in resolved if t.qualname in calib_names]
            if not resolved:
                # a calibrator imported from a helper module is not in the script, but its name
                # and a validation argument say the same thing
                callee = dotted(call.func).split(".")[-1]
                if CALIB_FN.search(callee) and not EVAL_FN.search(callee):
                    targets = [f"{callee}() (defined outside the script)"]
            if not targets or not any(taint.expr(fi, a) for a in [*call.args, *(k.value for k in call.keywords)]):
                continue
            if sw.off_guard(call):
                offs.append(prog.evidence(call))
            else:
                fails.append((f"{targets[0]} is called with validation data", [prog.evidence(call)]))
    for fi in calib:
        if not runs(fi):
            continue
        for n in walk_own(fi.node):
            name = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else None
            if name and is_val_name(name) and isinstance(getattr(n, "ctx", None), ast.Load):
                if sw.off_guard(n):
                    offs.append(prog.evidence(n))
                else:
                    fails.append((f"{fi.name}() reads validation data ({name}) for calibration", [prog.evidence(n)]))
                break
    if fails:
        return result(me, "fail", fails[0][0], evidence=[e for _, es in fails for e in es][:6])
    if offs:
        return result(me, "pass", "a validation-calibration path exists but is switched off (env default or logged configuration)",
                      evidence=offs[:4])
    if calib:
        return result(me, "pass", f"calibration ({calib[0].name}) does not read validation data")
    return result(me, "pass", "no quantization calibration on validation data")


def _has_val_branch(prog) -> bool:
    """A comparison against "val" somewhere (the branch a calibration-source switch selects)."""
    for n in ast.walk(prog.index.tree):
        if isinstance(n, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in ("val", "validation")
                                             for c in [n.left, *n.comparators]):
            return True
    return False
