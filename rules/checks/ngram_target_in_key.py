"""PG402 ngram-target-in-key — no eval-time lookup whose key includes the token being predicted,
and no mixing/gating that looks at the realized token.

Rulings: valerio-oai on PR #779 (2026-03-27, comments 4145781641/4146407380) and on #982 (such
caches "do not renormalize correctly … look ahead to the target token to mix probabilities and
therefore leak eval tokens"); ~100 PRs closed around #677 (#727, #741, #758, #779, #786, #788 …);
abaybektursun's analysis on #886 (the gold-only count ratio sums to ≈277 over the vocabulary);
target-gated mixing: valerio-oai on #659 (entropy gating is the legal alternative), PR #1420's
n-gram tilt gated on `is_bnd[tokens[p]]` (a property of the target, #1017 C1) fixed to
`tokens[p-1]` in record #1514, the same bug flagged on #1967 and #2118.

Fires (fail) when code reachable at evaluation:
- reads a count/hash table with a key that arithmetically combines the token being predicted
  (`y`, `tgt`, `val_np[j]` where the context is `val_np[j-k]`) with its context
  (`full_key = (ctx_hash ^ (tgt * prime)) & mask; p = full[full_key] / ctx[ctx_key]`);
- picks per token the better of two experts by their losses on the realized token
  (`min(nll_model, nll_cache)`, `torch.minimum(nll_a, nll_b)`);
- gates a mixing weight / expert on a lookup of the target (`is_bnd[tokens[p]]` used for a beta or
  hint at position p).
- (C/C++ kernels shipped beside the script) index a boundary/word-start table at `tokens[p]`, or at
  a local alias of it (`auto tok = tokens_[p]; … is_bnd_[tok]`) before the position's hint/beta is
  written (the #1420 shape; #1514 reads `is_bnd_[tok]` only after `hints[i] =`, to update state).
Per-order nested tables (`full_tables[n][full_key]`) and keys returned by a hash helper given the
target (`_batch_hash_full(tokens, pos, targets, n, mask)`) count like inline keys.
Does not fire on: a joint (context, target) key used only to update counts, a read-time full-vocab
distribution (`counts[ctx_key]` normalized over V, then indexed by the target), keys built from the
strict prefix only, gates on `tokens[p-1]`, byte-count LUTs indexed by the target, or a path the
env default / logged configuration switches off (said so). No training script: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import program_for
from ..analysis.index import dotted, table_base, walk_own
from ..analysis.ngram import tables_of, table_reads
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import result, safe_check

ID = "ngram-target-in-key"
CODE = "PG402"
TITLE = "No target token in eval-time lookup keys"

TABLE_NAME = re.compile(r"(count|cnt|table|hash|freq|cache|bucket|ngram|gram|tab|hist|full|ctx|pair)", re.I)
LOSS_NAME = re.compile(r"(nll|loss|logp|log_p|bits|ce|xent|neg_log)", re.I)
GATE_LUT = re.compile(r"(is_bnd|is_ws|bnd|boundary|word_start|is_word|ws_lut|is_space|starts_word|is_punct)", re.I)
GATE_USE = re.compile(r"(gate|alpha|beta|weight|hint|expert|mix|boost|bias|lam|tilt|scale|w_)", re.I)


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _hashy(ft, idx: ast.AST) -> bool:
    for e in ft.closure(idx):
        for n in ast.walk(e):
            if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.BitXor, ast.Mod, ast.BitAnd, ast.LShift)):
                return True
            if isinstance(n, ast.Call) and dotted(n.func).split(".")[-1] in (
                    "bitwise_xor", "bitwise_and", "remainder", "mod", "fmod", "left_shift", "hash"):
                return True
            if isinstance(n, ast.Constant) and isinstance(n.value, int) and n.value > 10_000:
                return True
            if isinstance(n, (ast.Name, ast.Attribute)) and re.search(r"prime|mask|mult|hash", dotted(n), re.I):
                return True
    return False


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    reach = prog.flow.reachable("any")
    fails: list[tuple[str, list[Evidence]]] = []
    offs: list[Evidence] = []
    for fi in prog.index.all_functions():
        hit = reach.get(fi.qualname)
        running = hit[1] if hit else False
        if hit is None and not prog.flow.in_chain(fi):
            continue
        if prog.flow.in_chain(fi):
            running = True
        ft = tables_of(fi)
        found: list[tuple[str, list[Evidence]]] = []
        # (a) table read with a target-combined key
        for sub in table_reads(fi, prog.index):
            base = table_base(sub.value)
            idx = sub.slice
            if not base or not TABLE_NAME.search(base):
                continue
            tgt = ft.combines_target(idx)
            if tgt is None or not _hashy(ft, idx):
                continue
            if prog.switches.off_guard(sub):
                offs.append(prog.evidence(sub, "switched off"))
                continue
            ev = [prog.evidence(sub, "lookup whose key includes the predicted token")]
            key_line = _key_line(ft, idx)
            if key_line and key_line != sub.lineno:
                ev.insert(0, prog.evidence(key_line, "key built from the target"))
            found.append((f"{fi.name}() reads {base}[...] with a key that includes the token being predicted "
                          f"({ast.unparse(tgt)})", ev))
        # (b) oracle choice between experts by their loss (or gold probability) on the realized token
        for n in walk_own(fi.node):
            if _oracle_choice(prog, fi, n):
                if prog.switches.off_guard(n):
                    offs.append(prog.evidence(n, "switched off"))
                else:
                    found.append((f"{fi.name}() picks per token the expert that did better on the realized token "
                                  f"({ast.unparse(n)[:60]}), an oracle choice of expert", [prog.evidence(n)]))
        # (c) a gate read at the target
        for sub in table_reads(fi, prog.index):
            base = table_base(sub.value)
            if not base or not GATE_LUT.search(base):
                continue
            idx = sub.slice
            if not any(ft.is_target(t) or ft._named_target(t) for t in ast.walk(idx)):
                continue
            stmt = _stmt_of(prog.index, sub)
            text = ast.unparse(stmt) if stmt is not None else ""
            lhs = _assigned_names(stmt)
            if re.search(r"byte|tb\b|nbytes|n_bytes", " ".join(lhs) + " " + text, re.I):
                continue
            in_test = any(isinstance(a, (ast.If, ast.IfExp)) and _inside(prog.index, sub, a.test)
                          for a in prog.index.ancestors(sub)) or "where(" in text
            if not (in_test or any(GATE_USE.search(x) for x in lhs) or GATE_USE.search(text)):
                continue
            if prog.switches.off_guard(sub):
                offs.append(prog.evidence(sub, "switched off"))
                continue
            found.append((f"{fi.name}() gates a mixing weight on {ast.unparse(sub)}, a property of the token "
                          "being predicted (gate on the previous token instead, #1514)", [prog.evidence(sub)]))
        for msg, ev in found:
            if running:
                fails.append((msg, ev))
            else:
                offs.extend(ev)
    fails += _native_gates(ctx)
    if fails:
        return result(me, "fail", fails[0][0], evidence=[e for _, es in fails for e in es][:6])
    if offs:
        return result(me, "pass", "a target-keyed lookup exists but is switched off (env default or logged configuration) "
                      "(or not reached)", evidence=offs[:4])
    return result(me, "pass", "no eval-time lookup keyed on the predicted token")


def _key_line(ft, idx: ast.AST) -> int | None:
    if isinstance(idx, ast.Name) and idx.id in ft.defs:
        return getattr(ft.defs[idx.id][0], "lineno", None)
    return getattr(idx, "lineno", None)


def _stmt_of(index, node: ast.AST) -> ast.stmt | None:
    for a in index.ancestors(node):
        if isinstance(a, ast.stmt):
            return a
    return None


def _assigned_names(stmt: ast.stmt | None) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [ast.unparse(t) for t in stmt.targets]
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        return [ast.unparse(stmt.target)]
    return []


def _inside(index, node: ast.AST, container: ast.AST) -> bool:
    return node is container or any(a is container for a in index.ancestors(node))


PROB_NAME = re.compile(r"(^p_|_p$|prob|gold|p_tgt|p_model|p_ng|p_cache)", re.I)
ACC_NAME = re.compile(r"(loss|nll|bits|logp|score)", re.I)


def _oracle_choice(prog, fi, n: ast.AST) -> bool:
    """`torch.minimum(nll_model, nll_cache)` (elementwise), `min(nll_a, nll_b)` accumulated into the
    score, `max(p_model_gold, p_ngram_gold)`, or `where(p_ng > p_model, ...)` choosing a weight.
    A running best (`best = min(best, val_loss)`) is not one: it is never accumulated."""
    if isinstance(n, ast.Call) and len(n.args) >= 2:
        fname = dotted(n.func).split(".")[-1]
        both_loss = all(LOSS_NAME.search(ast.unparse(a)) for a in n.args[:2])
        both_prob = all(PROB_NAME.search(ast.unparse(a)) for a in n.args[:2])
        if fname in ("minimum", "fmin") and both_loss or fname in ("maximum", "fmax") and both_prob:
            return not any(re.search(r"best|clamp|eps|floor", ast.unparse(a), re.I) for a in n.args[:2])
        if fname in ("min", "max") and (both_loss if fname == "min" else both_prob):
            return _accumulated(prog, fi, n)
        if fname == "where" and n.args and isinstance(n.args[0], ast.Compare):
            cmp = n.args[0]
            sides = [cmp.left, *cmp.comparators]
            if len(sides) == 2 and (all(LOSS_NAME.search(ast.unparse(x)) for x in sides)
                                    or all(PROB_NAME.search(ast.unparse(x)) for x in sides)):
                return True
    return False


def _accumulated(prog, fi, n: ast.AST) -> bool:
    stmt = _stmt_of(prog.index, n)
    if isinstance(stmt, ast.AugAssign) and ACC_NAME.search(ast.unparse(stmt.target)):
        return True
    if isinstance(stmt, ast.Assign):
        names = {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        for m in walk_own(fi.node):
            if isinstance(m, ast.AugAssign) and ACC_NAME.search(ast.unparse(m.target)) and \
                    names & {x.id for x in ast.walk(m.value) if isinstance(x, ast.Name)}:
                return True
    return False


NATIVE_EXT = (".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".cu")
NATIVE_GATE = re.compile(
    r"\b(?:is_bnd|is_ws|is_boundary|bnd|word_start|is_word|is_space)\w*\s*\[\s*"
    r"(tokens|toks|tok|ids|seq|x)_?\s*\[\s*(p|pos|i|t|j)\s*\]\s*\]")


def _native_gates(ctx: AuditContext) -> list[tuple[str, list[Evidence]]]:
    """C/C++ kernels shipped beside the script (n-gram tilt, online n-gram state): a boundary /
    word-start LUT read at the scored position `tokens[p]` is the #1420 / #1967 / #2118 bug; the fix
    reads `tokens[p - 1]`."""
    out = []
    root = getattr(ctx.submission, "root", None)
    for rel in getattr(ctx.submission, "files", []) or []:
        if not rel.lower().endswith(NATIVE_EXT) or root is None:
            continue
        try:
            path = root / rel
            if path.stat().st_size > 2_000_000:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        hit = _native_gate_line(text)
        if hit is not None:
            i, line, what = hit
            out.append((f"{rel} gates on {what}, a property of the token being predicted (the fix reads "
                        "tokens[p - 1], #1514)", [Evidence(source="code", file=rel, line=i, text=line.strip()[:300])]))
    return out


# `auto tok = uint16_t(tokens_[p]);` — a local alias of the token at the scored position
NATIVE_ALIAS = re.compile(r"\b(\w+)\s*=\s*[^;]*?\b(?:tokens|toks|ids|seq)_?\s*\[\s*(?:p|pos)\s*\]")
NATIVE_LOOP = re.compile(r"^\s*(for|while)\s*\(")
# the hint / beta for the position being written: after it, a target read is the count update
NATIVE_HINT_WRITE = re.compile(r"\b(hints?|betas?|beta_out|hint_out|gate_out)\w*\s*\[[^\]]*\]\s*=[^=]")


def _native_gate_line(text: str) -> tuple[int, str, str] | None:
    """The first line reading a boundary LUT at the scored token, literally (`is_bnd[tokens[p]]`) or
    through an alias assigned from `tokens_[p]`, before any hint/beta of that position is written.
    The legal #1514 kernel reads `is_bnd_[tok]` too, but only in its update path after `hints[i] =`."""
    aliases: dict[str, int] = {}       # alias -> line it was (re)assigned from tokens[p]
    hint_written = False               # a hint/beta was written earlier in the current loop body
    for i, line in enumerate(text.splitlines(), 1):
        code = line.split("//", 1)[0]
        if not code.strip() or code.lstrip().startswith(("/*", "*")):
            continue
        if NATIVE_LOOP.match(code):
            hint_written = False
        m = NATIVE_GATE.search(code)
        if m:
            return i, line, m.group(0)
        for name in list(aliases):
            lut = re.search(r"\b(is_bnd|is_ws|is_boundary|bnd|word_start|is_word|is_space)\w*\s*\[\s*" + re.escape(name)
                            + r"\s*\]", code)
            if lut and not hint_written:
                return i, line, f"{lut.group(0)} (with {name} = the token at p)"
        if NATIVE_HINT_WRITE.search(code):
            hint_written = True
        am = NATIVE_ALIAS.search(code)
        if am:
            aliases[am.group(1)] = i
        elif am is None:
            for name in list(aliases):
                if re.search(r"\b" + re.escape(name) + r"\s*=[^=]", code):
                    del aliases[name]       # re-assigned from something else
    return None
