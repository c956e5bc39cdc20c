"""PG405 validation-in-training — validation tokens do not shape the shipped weights.

Rulings: README (commit 2cff08e1a, 2026-03-20: "You CANNOT access validation data during
training, e.g. by compressing it into your 16mb with 'paid prefix'"; val-only training PRs #44 and
#120 closed); pre-quant TTT on validation before quantization (#1376 closed by valerio-oai on
2026-04-10, #1485–#1517 bundled in #677, "pre-quant/future-validation leakage" excluded in #1902);
the CaseOps train/val overlap (issue #2127: `prepare_caseops_data.py --val-docs 10_000` puts 80% of
the validation documents into training; fingerprints `train_shards: 1499` and a ≈9.66M-token
validation split; #2018 and #2130 excluded in #2146).

Fires (fail) on:
- a log showing `train_shards: 1499` or a validation split of about 9.66M tokens;
needs_review on a README/`.sh` line that links or copies a validation shard to a training-shard name,
or a log with `train_shards` ≤ 2 (the fewest in the 127 merged records' logs is 20);
- the training loop (or its loader) reading validation shards/tokens;
- weight updates on validation tokens before the model is serialized without those tokens being
  scored first (pre-quant TTT), under the configuration the logs show;
- validation tokens written into the artifact (`torch.save` of validation-derived data).
Does not fire on: score-first TTT at evaluation (PG401 judges it), periodic validation during
training (no backward), a TTT path switched off by its env default or the logged configuration
(the message says the path exists but is off); an optimizer over a tensor the eval creates itself
(SLOT's delta) gives needs_review, not fail. No script and no log fingerprint: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import program_for
from ..analysis.facts import log_evidence, serialization_site, unreached_val_trainers, val_training
from ..analysis.index import call_name, walk_own
from ..analysis.taint import is_val_string
from ..context import AuditContext
from ..model import Evidence, RuleResult
from . import _runs
from ._base import result, safe_check

ID = "validation-in-training"
CODE = "PG405"
TITLE = "Validation data does not shape the shipped weights"

ARTIFACT = re.compile(r"(state_dict|final_model|\.ptz|artifact|quant|model)", re.I)
LEAKY_SHARDS = 1499
LEAKY_VAL_TOKENS = (9_550_000, 9_780_000)   # ≈ 9.66M (#2127, #1881: 9,662,464)


def check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    return _runs.merge(me, ctx, safe_check(me, _check, ctx))


def _log_findings(ctx: AuditContext) -> list[tuple[str, Evidence]]:
    out = []
    for log in ctx.submission.logs:
        if getattr(log, "train_shards", None) == LEAKY_SHARDS:
            out.append((f"{log.file} shows train_shards: {LEAKY_SHARDS}, the fingerprint of the CaseOps "
                        "train/validation overlap (#2127)",
                        log_evidence(log, "train_shards", f"train_shards: {LEAKY_SHARDS}")))
        vt = getattr(log, "val_tokens", None)
        if vt and LEAKY_VAL_TOKENS[0] <= vt <= LEAKY_VAL_TOKENS[1]:
            out.append((f"{log.file} shows a {vt:,}-token validation split, the ≈9.66M fingerprint of the "
                        "leaky CaseOps split (#2127); the full split is 47,851,520 tokens",
                        log_evidence(log, "val_tokens", f"val_tokens: {vt}")))
    return out


# `ln -s …/fineweb_val_000000.bin …/fineweb_train_000000.bin` (or cp/rsync/mv): a validation shard
# put where the loader looks for training shards (#44-era val-only training).
SHARD_ALIAS = re.compile(r"\b(ln|cp|rsync|mv|install)\b[^\n]*?\S*_val_\S*\.bin\S*\s+\S*_train_\S*", re.I)
# The fewest training shards in any of the 127 merged records' logs is 20; one or two shards is
# what a run on an aliased validation shard shows.
FEW_TRAIN_SHARDS = 2
MERGED_MIN_TRAIN_SHARDS = 20


def _valonly_findings(ctx: AuditContext) -> list[tuple[str, Evidence]]:
    """Validation shards aliased as training shards (README / shipped .sh), and logs that trained on
    at most FEW_TRAIN_SHARDS shards. Either is a question for a person (the #44-era val-only
    records called it legal; #44 and #120 were closed), so they give needs_review, not fail."""
    out: list[tuple[str, Evidence]] = []
    sub = ctx.submission
    files = getattr(sub, "files", []) or []
    texts: list[tuple[str, str]] = [("README.md", sub.readme)] if sub.readme and "README.md" not in files else []
    root = getattr(sub, "root", None)
    for rel in files:
        if rel.lower().endswith((".sh", ".md")) and root is not None:
            try:
                texts.append((rel, (root / rel).read_text(encoding="utf-8", errors="replace")[:200_000]))
            except OSError:
                continue
    for name, text in texts:
        for i, line in enumerate(text.splitlines(), 1):
            if SHARD_ALIAS.search(line):
                out.append((f"{name} puts a validation shard where the loader reads training shards; the run "
                            "may train on validation tokens",
                            Evidence(source="code", file=name, line=i, text=line.strip()[:300])))
                break
    for log in sub.logs:
        n = getattr(log, "train_shards", None)
        if n is not None and n <= FEW_TRAIN_SHARDS:
            out.append((f"{log.file} trained on {n} shard(s); every merged record's log shows at least "
                        f"{MERGED_MIN_TRAIN_SHARDS}, so check the shard is not validation data",
                        log_evidence(log, "train_shards", f"train_shards: {n}")))
    return out


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    log_hits = _log_findings(ctx)
    if log_hits:
        return result(me, "fail", log_hits[0][0], evidence=[e for _, e in log_hits][:6])
    valonly = _valonly_findings(ctx)
    prog, early = program_for(me, ctx)
    if early is not None:
        if valonly:
            return result(me, "needs_review", valonly[0][0], evidence=[e for _, e in valonly][:6])
        return early

    fails: list[tuple[str, list[Evidence]]] = []
    off_notes: list[tuple[str, list[Evidence]]] = []

    # 1. the training data itself is validation data
    tf = prog.switches.attr_defs.get("train_files")
    if tf is not None and any(isinstance(n, ast.Constant) and isinstance(n.value, str) and is_val_string(n.value)
                              for n in ast.walk(tf)):
        line = prog.switches.attr_lines.get("train_files")
        fails.append(("the training files pattern points at validation shards", [prog.evidence(line)]))

    # 2. weight updates on validation tokens before serialization
    ser = serialization_site(prog)
    reviews: list[tuple[str, list[Evidence]]] = []
    for vt in val_training(prog):
        order = vt.site.order if vt.site is not None else _order_of(prog, vt.cls.node)
        before_ser = ser is None or order < ser.order
        if vt.cls.kind in ("score_first", "score_all_then_train", "warmup"):
            if before_ser and ser is not None and not vt.off:
                reviews.append((f"{vt.fn.name}() adapts on validation tokens before the model is serialized; unless "
                                "it adapts a copy, the shipped weights carry validation updates",
                                [prog.evidence(vt.cls.line), prog.evidence(ser.line, "serialized after")]))
            continue
        ev = [prog.evidence(vt.cls.line)]
        if vt.site is not None and vt.site.line != vt.cls.line:
            ev.append(prog.evidence(vt.site.line, f"calls {vt.fn.name}()"))
        if vt.off:
            g = vt.site.off if vt.site is not None and vt.site.off else None
            why = prog.switches.explain(g[0]) if g else ""
            off_notes.append((f"{vt.fn.name}() updates weights on validation tokens but the path is switched off "
                              f"{why}".rstrip(), [prog.evidence(g[1])] if g else ev))
            continue
        if before_ser and _local_delta_only(prog, vt.cls.line):
            reviews.append((f"{vt.fn.name}() optimizes a tensor it creates itself (a SLOT-style delta) on validation "
                            "tokens, not the model's parameters; check that nothing it learns reaches the artifact",
                            ev))
            continue
        if before_ser:
            where = "in the training loop" if vt.site is None else f"in {vt.fn.name}()"
            fails.append((f"weights are updated on validation tokens {where} before the model is serialized "
                          "(validation data shapes the shipped weights)", ev))

    # 3. validation data written into the artifact (paid prefix)
    for fi in [*prog.index.all_functions()]:
        for n in walk_own(fi.node):
            if isinstance(n, ast.Call) and call_name(n) in ("save", "savez", "savez_compressed", "register_buffer") \
                    and any(prog.taint.expr(fi, a) for a in n.args if not isinstance(a, ast.JoinedStr)) \
                    and (call_name(n) == "register_buffer" or ARTIFACT.search(ast.unparse(n))):
                if prog.switches.off_guard(n) is None:
                    fails.append(("validation-derived data is written into the artifact (paid prefix)",
                                  [prog.evidence(n)]))

    if fails:
        extra = f" (and {len(fails) - 1} more)" if len(fails) > 1 else ""
        return result(me, "fail", fails[0][0] + extra, evidence=[e for _, es in fails for e in es][:8])
    reviews += [(msg, [e]) for msg, e in valonly]
    if reviews:
        return result(me, "needs_review", reviews[0][0], evidence=[e for _, es in reviews for e in es][:6])
    hidden = unreached_val_trainers(prog)
    if hidden:
        fi, cls = hidden[0]
        return result(me, "needs_review", f"{fi.name}() updates weights on validation tokens and is referenced, but "
                      "the analysis cannot tell when it runs", evidence=[prog.evidence(cls.line)])
    if off_notes:
        return result(me, "pass", "the path exists but is off: " + off_notes[0][0], evidence=off_notes[0][1])
    return result(me, "pass", "no training on validation tokens before serialization and no overlap "
                  "fingerprint in the logs")


OPTIMIZER = re.compile(r"^(SGD|Adam|AdamW|RMSprop|Adagrad|LBFGS|Muon|Lion|Adafactor)$")


def _local_delta_only(prog, line: int | None) -> bool:
    """The function holding the backward at `line` builds its optimizers only over tensors it
    creates itself (`delta = torch.zeros(..., requires_grad=True)`; SLOT, #1017 item 8), so the
    update cannot reach the model's weights."""
    if line is None:
        return False
    fns = [fi for fi in prog.index.all_functions()
           if fi.node.lineno <= line <= (getattr(fi.node, "end_lineno", None) or fi.node.lineno)]
    if not fns:
        return False
    fi = max(fns, key=lambda f: f.node.lineno)
    local: set[str] = set()
    opts: list[ast.Call] = []
    for n in walk_own(fi.node):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and any(
                k.arg == "requires_grad" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in n.value.keywords):
            local |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        if isinstance(n, ast.Call) and OPTIMIZER.match(call_name(n) or "") and n.args:
            opts.append(n)
    if not opts:
        return False
    for o in opts:
        arg = o.args[0]
        elts = arg.elts if isinstance(arg, (ast.List, ast.Tuple)) else [arg]
        if not elts or not all(isinstance(e, ast.Name) and e.id in local for e in elts):
            return False
    return True


def _order_of(prog, node) -> int:
    line = getattr(node, "lineno", 0)
    orders = [s.order for s in prog.flow.sites if s.line <= line]
    return max(orders) if orders else -1
