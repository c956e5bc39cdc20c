"""PG401 ttt-score-first — test-time training only ever updates on validation tokens that were
already scored; trained tokens are never re-scored; one left-to-right pass.

Rulings: README (commit fc6332a9c, 2026-03-20: TTT only on "validation set tokens you've already
evaluated your model on"); #402 (score t, then adapt on tokens ≤ t); valerio-oai on #568/#771
(multi-epoch TTT reporting the last epoch is training on eval data) and #677 (illegal TTT closed);
#991 (re-scored s_1 reported instead of s_0); #1376 closed and #1485–#1517 bundled (pre-quant TTT:
epochs of AdamW on `val_tokens` before quantization, then scoring the frozen model); #1017 C3/C4.
Legal precedent: #461/#549 chunked score-first TTT (`if not is_last_chunk`), #1530 per-document
LoRA TTT, #1610/#1626 phased TTT on already-scored documents, multi-epoch adaptation on
already-scored chunks (#549, #1493, #1812).

How it decides (static, over the script the logs ran, see rules/analysis/ttt.py):
- every `.backward()` on validation-derived values (followed through assignments, tuple unpacking,
  subscript stores and call arguments) is a train site; a no_grad/inference_mode block on
  validation data that accumulates a loss (or computes per-token `reduction="none"` losses, or calls
  a scorer), or an `acc += loss` into a loss accumulator, is a score event — a frozen feature pass
  (SLOT's `hid = backbone(x)` before fitting a delta on the window's own targets) is not;
- fail: a train site with no score before it (pre-quant TTT, adapt-then-score), a loop that trains
  before it scores, scoring inside an epoch loop (tokens re-scored after training), or a second
  validation evaluation after TTT whose number is reported;
- needs_review: a compile warm-up that runs backward on validation tokens (#1530 was merged with
  one; later records warm up on random tokens);
- needs_review (from logs): two different TTT score lines in one seed log;
- pass: chunked / per-document score-then-train, TTT switched off by its env default or by the
  logged configuration (the message says the path exists but is off), or no TTT at all.
No training script: not_applicable.
"""
from __future__ import annotations

import re
import sys

from ..analysis import program_for
from ..analysis.facts import referenced
from ..analysis.flow import CallSite
from ..analysis.ttt import BAD_KINDS, Site
from ..context import AuditContext
from ..model import Evidence, RuleResult
from . import _runs
from ._base import log_ev, result, safe_check

ID = "ttt-score-first"
CODE = "PG401"
TITLE = "Test-time training is score-first"

_KIND_TEXT = {
    "train_only": "trains on validation tokens before scoring them (pre-quant / adapt-then-score TTT)",
    "train_then_score": "updates on a chunk of validation tokens before scoring that chunk",
    "score_in_epoch": "scores inside the TTT epoch loop, so tokens are re-scored after being trained on",
}


def check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    static = safe_check(me, _static_then_logs, ctx,
                        "the TTT analysis could not finish ({error}); review the eval path by hand")
    return _runs.merge(me, ctx, static)


def _static_then_logs(ctx: AuditContext) -> RuleResult:
    static = _check(ctx)
    if static.outcome in ("pass", "not_applicable"):
        static = _log_check(ctx) or static
    return static


def _log_check(ctx: AuditContext) -> RuleResult | None:
    """Two different TTT score lines in one seed log: a second TTT pass over the same tokens."""
    for log in ctx.submission.logs:
        tags: dict[str, list] = {}
        for s in getattr(log, "scores", []) or []:
            if getattr(s, "excluded", None) is None and "ttt" in s.tag.lower():
                tags.setdefault(re.sub(r"_exact$", "", s.tag), []).append(s)
        if len(tags) >= 2:
            lines = [v[0].line for v in tags.values()]
            return result(sys.modules[__name__], "needs_review",
                          f"{log.file} reports {len(tags)} different TTT scores ({', '.join(sorted(tags))}); "
                          "one scored TTT pass per seed is expected",
                          evidence=[log_ev(log.file, ln.line, ln.text) for ln in lines[:4]])
    return None


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    ttt, flow = prog.ttt, prog.flow
    fails: list[tuple[str, list[Evidence]]] = []
    reviews: list[tuple[str, list[Evidence]]] = []
    legal: list[tuple[str, list[Evidence]]] = []
    off: list[tuple[str, list[Evidence]]] = []
    called: set[str] = set()

    for site in flow.sites:
        for fn in site.targets:
            if not ttt.trains_val(fn):
                continue
            called.add(fn.qualname)
            cls = ttt.classify_call(prog.index.function_of(site.call), site.call, fn)
            if cls is None:
                continue
            where = [prog.evidence(cls.line)]
            if site.line != cls.line:
                where.append(prog.evidence(site.line, f"calls {fn.name}()"))
            elif cls.via is not None and cls.via.line != cls.line:
                where.append(prog.evidence(cls.via.line))    # the update inside the helper
            if site.off is not None:
                guard, guard_line = site.off
                why = prog.switches.explain(guard) or f"({prog.line(guard_line)})"
                off.append((f"{fn.name}() trains on validation tokens but is switched off {why}",
                            [prog.evidence(guard_line), *where]))
                continue
            later = _later_scoring(prog, site)
            if cls.kind in BAD_KINDS:
                if cls.kind == "train_only" and not later:
                    reviews.append((f"{fn.name}() trains on validation tokens and nothing is scored after it",
                                    where))
                    continue
                fails.append((f"{fn.name}() {_KIND_TEXT[cls.kind]}", where))
            elif cls.kind == "warmup":
                reviews.append((f"{fn.name}() runs backward on validation tokens in a warm-up before scoring "
                                "(#1530 was merged with this; later records warm up on random tokens)", where))
            elif later:
                ev = [prog.evidence(later.line, "validation scored again after TTT"), *where]
                fails.append((f"validation is evaluated again after {fn.name}() adapted the model on it "
                              "(the re-scored number is reported, #991)", ev))
            else:
                legal.append((_legal_text(fn.name, cls), where))

    # TTT written directly in the entry function (no helper)
    for owner in flow.chain:
        for b in ttt.direct_train_sites(owner):
            if prog.switches.off_guard(b) is not None:
                continue
            cls = ttt._site(owner, b, None)
            later = next((s for s in flow.sites if s.line > b.lineno and prog.index.function_of(s.call) is owner
                          and _scores_val_site(prog, s) and not prog.index.exclusive(b, s.call)), None)
            if cls.kind == "warmup" or (later is not None and cls.kind not in BAD_KINDS and
                                        _near_warm_text(prog, b)):
                reviews.append((f"{owner.name}() runs backward on validation tokens in a warm-up before scoring "
                                "(#1530 was merged with this; later records warm up on random tokens)",
                                [prog.evidence(b)]))
            elif cls.kind in BAD_KINDS:
                fails.append((f"{owner.name}() {_KIND_TEXT[cls.kind]}", [prog.evidence(b)]))
            elif later is not None:
                fails.append((f"{owner.name}() updates on validation tokens and then scores them again "
                              f"(line {later.line})", [prog.evidence(b), prog.evidence(later.line, "scored after")]))

    if fails:
        msg, ev = fails[0]
        extra = f" (and {len(fails) - 1} more)" if len(fails) > 1 else ""
        return result(me, "fail", msg + extra, evidence=[e for _, es in fails for e in es][:8])
    if reviews:
        msg, ev = reviews[0]
        return result(me, "needs_review", msg, evidence=[e for _, es in reviews for e in es][:8])
    if legal:
        msg, ev = legal[0]
        return result(me, "pass", msg, evidence=ev)
    if off:
        msg, ev = off[0]
        return result(me, "pass", f"the TTT path exists but is off: {msg}", evidence=ev)
    dead = [fi for fi in prog.index.all_functions()
            if fi.qualname not in called and ttt.trains_val(fi) and
            fi.qualname not in flow.reachable("any") and not flow.in_chain(fi)]
    if dead:
        fi = dead[0]
        cls = ttt.classify(fi)
        ev = [prog.evidence(cls.line if cls else fi.line, "not called from the main flow")]
        if cls is not None and cls.kind in BAD_KINDS and referenced(prog, fi):
            return result(me, "needs_review", f"{fi.name}() {_KIND_TEXT[cls.kind]}; it is referenced but reached "
                          "through a call the analysis cannot follow", evidence=ev)
        return result(me, "pass", f"{fi.name}() trains on validation tokens but is never called from the "
                      "main flow", evidence=ev)
    return result(me, "pass", "no test-time training on validation tokens in the script")


def _legal_text(name: str, cls: Site) -> str:
    if cls.kind == "score_all_then_train":
        return f"{name}() scores the validation tokens before training on them and nothing is re-scored"
    guard = " with the last chunk left untrained" if cls.guarded_last else ""
    return f"{name}() scores each chunk before training on it (score-first TTT{guard})"


def _near_warm_text(prog, node) -> bool:
    ln = getattr(node, "lineno", 0)
    return any("warm" in prog.index.line_text(k).lower() for k in range(max(1, ln - 6), ln + 1))


def _scores_val_site(prog, site: CallSite) -> bool:
    return site.off is None and any(prog.ttt.scores_val(t) for t in site.targets)


def _later_scoring(prog, site: CallSite) -> CallSite | None:
    for s in prog.flow.sites:
        if s.order > site.order and _scores_val_site(prog, s) and not _same_call_tree(prog, site, s) \
                and not prog.index.exclusive(site.call, s.call):
            return s
    return None


def _same_call_tree(prog, a: CallSite, b: CallSite) -> bool:
    """A nested call within the same statement (e.g. log(eval(...)) around the TTT call)."""
    return any(x is a.call for x in prog.index.ancestors(b.call)) or \
        any(x is b.call for x in prog.index.ancestors(a.call))

