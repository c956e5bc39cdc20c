"""PG403 two-pass-rescore — the reported score is not a second pass over tokens whose information
already entered the predictor.

Rulings: PRs #846, #853, #869, #870, #881, #888, #893, #907 and #959 (2026-03-26/27) closed — pass
1 scores and builds the complete cache, pass 2 rescores earlier (or all) chunks against it, so
every token benefits from counts that include itself (#959 reached 0.00000035 BPB); #1017 C3
(score before update) and C4 (single left-to-right pass); an eval-built cache used before the
tokens are scored violates C1.

Fires (fail) on, under the configuration the logs show:
- an env switch such as `NGRAM_FULL_RESCORE`, `NGRAM_TWOPASS_CHUNKS`, `TWO_PASS`, `RESCORE` that
  is on;
- one function with two sibling passes over validation data where the first only fills a
  table/cache (no lookups) and the second reads it while accumulating the loss;
- a cache built from the whole validation split by one call and handed to a later scoring call;
- a causal pass 1 (look up, then `cache.update_batch(...)`) followed in the same function by a
  later loop that looks the completed cache up without updating it while accumulating a loss — the
  #888 shape, found whatever the enabling switch is called.
Does not fire on: a single causal pass that looks up before it updates (a precompute that reads
its table before writing it is causal), several independent evaluations of a frozen model
(roundtrip + sliding window), or a switch that is off (said so). Re-scoring after TTT is judged
by PG401. No training script: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import program_for
from ..analysis.env import UNKNOWN, truthy
from ..analysis.index import FunctionInfo, call_name, dotted, walk_own
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import result, safe_check

ID = "two-pass-rescore"
CODE = "PG403"
TITLE = "No two-pass rescoring"

SWITCH = re.compile(r"(FULL_RESCORE|TWOPASS|TWO_PASS|RESCORE|SECOND_PASS|2PASS|BUILD_FULL)", re.I)
UPDATE_CALLS = {"add_", "index_add_", "scatter_add_", "put_", "update", "increment", "observe", "record",
                "add_counts", "update_counts"}
# cache methods named for what they do (`cache.update_batch`, `table.add_tokens`, `lookup_batch`)
UPDATE_METHOD = re.compile(r"(^|_)(update|add|record|insert|observe|increment)(_|$)", re.I)
READ_METHOD = re.compile(r"(lookup|query|predict|prob)", re.I)
LOSS_ACC = re.compile(r"(loss|nll|bits|bpb|logp|xent)", re.I)


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _mutated(loop: ast.AST) -> dict[str, ast.AST]:
    """Names of count tables a loop accumulates into (`t[k] += 1`, `np.add.at`, `index_add_`,
    `index_put_(..., accumulate=True)`, `.update(...)`). Plain stores (`x_batch[i] = chunk`) and
    list appends build inputs, not caches, and are not counted."""
    out: dict[str, ast.AST] = {}
    for n in ast.walk(loop):
        if isinstance(n, ast.AugAssign):
            if isinstance(n.target, ast.Subscript):
                name = dotted(n.target.value)
                if name:
                    out.setdefault(name, n)
        elif isinstance(n, ast.Call):
            fname = dotted(n.func)
            if fname.endswith(".at") and n.args:
                name = dotted(n.args[0])
                if name:
                    out.setdefault(name, n)
            elif isinstance(n.func, ast.Attribute) and n.func.attr in ("index_put_", "index_put"):
                if any(k.arg == "accumulate" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in n.keywords):
                    name = dotted(n.func.value)
                    if name:
                        out.setdefault(name, n)
            elif isinstance(n.func, ast.Attribute) and (n.func.attr in UPDATE_CALLS or UPDATE_METHOD.search(n.func.attr)):
                name = dotted(n.func.value)
                if name and not re.search(r"(loss|nll|log|result|out|hist|scores?)$", name, re.I):
                    out.setdefault(name, n)
    return out


def _reads(loop: ast.AST, name: str) -> list[ast.AST]:
    out = []
    for n in ast.walk(loop):
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load) and dotted(n.value) == name:
            out.append(n)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and dotted(n.func.value) == name \
                and (n.func.attr in ("get", "lookup", "query", "prob", "probs", "predict", "score")
                     or READ_METHOD.search(n.func.attr)):
            out.append(n)
    return out


def _is_lhs_of_update(n: ast.AST, parents) -> bool:
    p = parents.get(id(n))
    return isinstance(p, ast.AugAssign) and p.target is n


def _build_only(prog, loop: ast.AST) -> bool:
    """The loop writes tables and never looks them up (not a causal lookup-then-update pass)."""
    written = _mutated(loop)
    return bool(written) and not any(r for name in written for r in _reads(loop, name)
                                     if not _is_lhs_of_update(r, prog.index.parents))


def _two_pass(prog, fi: FunctionInfo) -> list[tuple[str, list[Evidence]]]:
    out = []
    ttt = prog.ttt
    events = ttt.score_events(fi)
    blocks = [fi.node.body] + [getattr(n, f) for n in walk_own(fi.node) for f in ("body", "orelse")
                               if isinstance(getattr(n, f, None), list) and not isinstance(n, ast.ClassDef)]
    for block in blocks:
        # passes: loops, or with-blocks (inference_mode) that wrap them
        loops = [s for s in block if isinstance(s, (ast.For, ast.While)) or (
            isinstance(s, ast.With) and any(isinstance(n, (ast.For, ast.While)) for n in ast.walk(s)))]
        for i, l1 in enumerate(loops):
            if not any(prog.taint.expr(fi, n) for n in ast.walk(l1) if isinstance(n, (ast.Name, ast.Subscript))):
                continue
            written = _mutated(l1)
            if any(r for name in written for r in _reads(l1, name)
                   if not _is_lhs_of_update(r, prog.index.parents)):
                # looks its tables up while updating them: a causal pass, fine on its own, unless a
                # later pass reads the completed tables again while accumulating the loss (#888)
                out += _rescore_after_causal_pass(prog, fi, block, l1, written)
                continue
            for name, wnode in written.items():
                for l2 in loops[i + 1:]:
                    reads = _reads(l2, name)
                    scored = [e for e in events if any(e is x for x in ast.walk(l2))]
                    if reads and scored and prog.switches.off_guard(l2) is None:
                        out.append((f"{fi.name}() fills {name} over the validation data in one pass and "
                                    f"rescores against it in a second pass",
                                    [prog.evidence(wnode, "pass 1 builds the cache"),
                                     prog.evidence(reads[0], "pass 2 reads the full cache while scoring")]))
                        break
    return out


def _rescore_after_causal_pass(prog, fi: FunctionInfo, block: list[ast.stmt], l1: ast.stmt,
                               written: dict[str, ast.AST]) -> list[tuple[str, list[Evidence]]]:
    """After a causal pass 1 (score, then update the cache), a later loop in the same block (or
    under an `if` there) that looks the completed cache up without updating it and accumulates a
    loss rescores every token against counts that include itself. Found by shape, not by the name
    of the switch that enables it."""
    later = block[block.index(l1) + 1:] if l1 in block else []
    for name, wnode in written.items():
        for k, s2 in enumerate(later):
            if any(_rebinds(x, name) for x in later[:k]):
                break                          # a fresh cache: the later passes start over
            for l2 in (n for n in ast.walk(s2) if isinstance(n, (ast.For, ast.While))):
                reads = _reads(l2, name)
                if not reads or name in _mutated(l2):
                    continue
                acc = [n for n in ast.walk(l2) if isinstance(n, ast.AugAssign) and isinstance(n.op, (ast.Add, ast.Sub))
                       and LOSS_ACC.search(ast.unparse(n.target))]
                if acc and prog.switches.off_guard(l2) is None:
                    return [(f"{fi.name}() scores the validation data while filling {name} (pass 1), then a later "
                             f"pass reads the completed {name} again while accumulating {ast.unparse(acc[0].target)}, "
                             "so every token is rescored against counts that include itself",
                             [prog.evidence(wnode, "pass 1 fills the cache"),
                              prog.evidence(reads[0], "pass 2 reads the full cache while scoring")])]
    return []


def _rebinds(stmt: ast.stmt, name: str) -> bool:
    return any(isinstance(n, ast.Assign) and any(dotted(t) == name for t in n.targets) for n in ast.walk(stmt))


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    sw = prog.switches
    fails: list[tuple[str, list[Evidence]]] = []
    offs: list[Evidence] = []
    for r in sw.reads:
        if not SWITCH.search(r.var):
            continue
        v = sw.read_state(r)
        if v is UNKNOWN:
            fails.append((f"{r.var} selects a rescoring pass and its value is not known", [prog.evidence(r.line)]))
        elif truthy(v) and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0):
            fails.append((f"{r.var}={v} turns on a second scoring pass over the validation tokens",
                          [prog.evidence(r.line)]))
        else:
            offs.append(prog.evidence(r.line, f"{r.var}={v}: off"))
    reach = prog.flow.reachable("any")
    for fi in prog.index.all_functions():
        hit = reach.get(fi.qualname)
        if hit is None and not prog.flow.in_chain(fi):
            continue
        found = _two_pass(prog, fi)
        if hit is not None and not hit[1]:
            offs += [e for _, es in found for e in es]
        else:
            fails += found
    fails += _prebuilt_cache(prog)
    fails += _shared_state_rescore(prog)
    unknown_only = fails and all("not known" in m for m, _ in fails)
    if fails and not unknown_only:
        real = [f for f in fails if "not known" not in f[0]]
        return result(me, "fail", real[0][0], evidence=[e for _, es in real for e in es][:6])
    if unknown_only:
        return result(me, "needs_review", fails[0][0], evidence=fails[0][1])
    if offs:
        return result(me, "pass", "a rescoring path exists but is switched off (env default or logged configuration)",
                      evidence=offs[:4])
    return result(me, "pass", "the reported score comes from a single pass")


def _prebuilt_cache(prog) -> list[tuple[str, list[Evidence]]]:
    """`cache = build_cache(val_tokens)` in the eval phase, then `score(..., cache)`."""
    out = []
    flow, ttt = prog.flow, prog.ttt
    for site in flow.sites:
        entry = prog.index.function_of(site.call)
        if site.off is not None or site.phase != "eval":
            continue
        for fn in site.targets:
            if ttt.scores_val(fn) or ttt.trains_val(fn):
                continue
            if not any(prog.taint.expr(entry, a) for a in site.call.args):
                continue
            if not any(_build_only(prog, l) for l in walk_own(fn.node) if isinstance(l, (ast.For, ast.While))):
                continue
            parent = prog.index.parent(site.call)
            if not isinstance(parent, ast.Assign):
                continue
            names = {n.id for t in parent.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            for later in flow.sites:
                if later.order <= site.order or later.off is not None:
                    continue
                if any(ttt.scores_val(t) for t in later.targets) and any(
                        isinstance(a, ast.Name) and a.id in names for a in [*later.call.args,
                                                                            *(k.value for k in later.call.keywords)]):
                    out.append((f"{fn.name}() builds a cache from the whole validation split before "
                                f"{call_name(later.call)}() scores with it",
                                [prog.evidence(site.call, "cache built over all validation tokens"),
                                 prog.evidence(later.call, "scored against it")]))
                    break
    return out


def _mutated_params(fn: FunctionInfo, call: ast.Call) -> set[str]:
    """Argument names at `call` whose parameter `fn` writes into (a cache filled while scoring)."""
    written = set()
    for loop in (n for n in walk_own(fn.node) if isinstance(n, (ast.For, ast.While))):
        written |= {name.split(".")[0] for name in _mutated(loop)}
    out = set()
    offset = 1 if fn.cls and isinstance(call.func, ast.Attribute) else 0
    for i, a in enumerate(call.args):
        j = i + offset
        if isinstance(a, ast.Name) and j < len(fn.params) and fn.params[j] in written:
            out.add(a.id)
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.arg in written:
            out.add(kw.value.id)
    return out


def _shared_state_rescore(prog) -> list[tuple[str, list[Evidence]]]:
    """Two scoring calls handed the same cache object, which the first one fills."""
    out = []
    sites = [s for s in prog.flow.sites if s.off is None and s.phase in ("eval", "unknown")]
    for i, first in enumerate(sites):
        direct = prog.index.resolve_call(first.call)      # argument positions map only for direct calls
        for fn in first.targets:
            if not prog.ttt.scores_val(fn) or not any(fn is d for d in direct):
                continue
            filled = _mutated_params(fn, first.call)
            filled = {n for n in filled if not re.search(r"(model|loss|sum|count|lut|bytes?)", n, re.I)}
            if not filled:
                continue
            for second in sites[i + 1:]:
                if prog.index.exclusive(first.call, second.call):
                    continue
                if not any(prog.ttt.scores_val(t) for t in second.targets):
                    continue
                args = {a.id for a in [*second.call.args, *(k.value for k in second.call.keywords)]
                        if isinstance(a, ast.Name)}
                shared = filled & args
                if shared:
                    name = sorted(shared)[0]
                    out.append((f"{call_name(second.call)}() scores the validation tokens again with {name}, which "
                                f"{fn.name}() filled during the first pass",
                                [prog.evidence(first.call, f"pass 1 fills {name}"),
                                 prog.evidence(second.call, "pass 2 rescored against it")]))
                    return out
    return out
