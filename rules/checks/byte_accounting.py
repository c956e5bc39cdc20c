"""PG407 byte-accounting — BPB byte counts come from the tokenizer's pieces correctly.

Rulings and references: README criterion 2 ("prove with certainty that the val_bpb is correctly
calculated"; tokenizer edits "examined much more carefully"); the canonical LUT
(`build_sentencepiece_luts` in the baseline and in merged #1019): control/unknown/unused tokens are
boundaries with 0 bytes, byte-fallback tokens count 1 byte, otherwise a leading "▁" sets
`has_leading_space`, is stripped, and the rest counts `len(piece.encode("utf-8"))` with no +1 —
the eval adds the space as `has_leading_space[y] & ~is_boundary[x]`; the +1 baked into the LUT
and added again at eval (≈17% more bytes, issue #1719, #1698/#1712/#1734, audit tool #1804; closed
#1545 and #1576); `is_unused` missing from the boundary predicate (#1804); Scylla #1184 removed for
byte-accounting errors (#1806); lossless CaseOps with byte sidecars accepted (#1729, #1736);
lossy normalization (casefold, #1578/#1585/#1670, issue #1604) never ruled on.

Decides:
- fail: the leading space counted twice (a +1 or the unstripped "▁" in the LUT while the eval also
  adds `has_leading_space`), or byte-fallback tokens given a byte count other than 1;
- needs_review: `is_unused` missing from the boundary predicate, no byte-fallback branch, text
  lowercased/casefolded before tokenization (lossy normalization, unresolved #1604), a validation
  token count far below the full split for the logged tokenizer;
- warn: a validation token count that matches no known split for the logged vocabulary size
  (custom tokenizer?), or no SentencePiece byte LUT builder in the script at all;
- pass: the canonical LUT (or a byte sidecar) and matching fingerprints.
No script and no log fingerprint: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import get_index, other_sources, program_for
from ..analysis.env import parse_literal
from ..analysis.index import FunctionInfo, ParseFailure, call_name, dotted, walk_own
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import log_ev, result, safe_check

ID = "byte-accounting"
CODE = "PG407"
TITLE = "BPB byte counts are correct"

# full validation split sizes by tokenizer (rules.md Rule 7)
KNOWN_VAL_TOKENS = {1024: {62_021_632}, 4096: {45_508_608, 45_514_752}, 8192: {40_540_160, 47_851_520}}
LEAKY = (9_550_000, 9_780_000)   # PG405 owns the CaseOps overlap fingerprint
SPACE = "\u2581"
LEADING = re.compile(r"(has_leading_space|leading_space|has_space|space_lut)", re.I)


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _lut_builders(index) -> list[FunctionInfo]:
    out = []
    for fi in index.all_functions():
        names = {call_name(n) for n in walk_own(fi.node) if isinstance(n, ast.Call)}
        if "id_to_piece" in names or "IdToPiece" in names or ("is_byte" in names and "is_control" in names):
            out.append(fi)
    return out


def _startswith_space(n: ast.AST) -> bool:
    return isinstance(n, ast.Call) and call_name(n) == "startswith" and n.args and \
        isinstance(n.args[0], ast.Constant) and n.args[0].value in (SPACE, "▁")


def _lut_findings(prog, fi: FunctionInfo, eval_adds_space: bool) -> tuple[list, list, list]:
    fails, reviews, notes = [], [], []
    calls = {call_name(n): n for n in walk_own(fi.node) if isinstance(n, ast.Call)}
    if "is_control" in calls and "is_unused" not in calls:
        reviews.append(("the boundary predicate of the byte LUT does not include is_unused (#1804)",
                        [prog.evidence(calls["is_control"])]))
    # byte-fallback tokens: 1 byte
    if "is_byte" not in calls:
        reviews.append(("the byte LUT has no byte-fallback branch (sp.is_byte): fallback pieces like <0xE2> "
                        "would count their text length", [prog.evidence(fi.node)]))
    else:
        ifs = [a for a in prog.index.ancestors(calls["is_byte"]) if isinstance(a, ast.If)]
        if ifs:
            for st in ast.walk(ifs[0]):
                if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Subscript) and \
                        re.search(r"byte", ast.unparse(st.targets[0]), re.I) and \
                        isinstance(st.value, ast.Constant) and st.value.value != 1:
                    fails.append((f"byte-fallback tokens count {st.value.value} bytes instead of 1",
                                  [prog.evidence(st)]))
                    break
    # the leading-space branch
    sw_nodes = [n for n in walk_own(fi.node) if _startswith_space(n)]
    if not sw_nodes:
        return fails, reviews, notes
    branch = next((a for a in prog.index.ancestors(sw_nodes[0]) if isinstance(a, ast.If)), None)
    text = ast.unparse(fi.node)
    stripped = bool(re.search(r"\[1:\]|lstrip\(|removeprefix\(|replace\(\s*['\"](\u2581|▁|\\u2581)['\"]\s*,\s*['\"]['\"]", text))
    plus_one = None
    for n in walk_own(fi.node):
        # base_bytes[i] = len(...) + 1   /   base_bytes[i] += 1   (after the space test)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript) and \
                re.search(r"byte", ast.unparse(n.targets[0]), re.I) and isinstance(n.value, ast.BinOp) and \
                isinstance(n.value.op, ast.Add) and "len(" in ast.unparse(n.value) and \
                any(isinstance(c, ast.Constant) and c.value == 1 for c in (n.value.left, n.value.right)):
            plus_one = n
        if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add) and isinstance(n.target, ast.Subscript) and \
                re.search(r"byte", ast.unparse(n.target), re.I) and isinstance(n.value, ast.Constant) and \
                n.value.value == 1 and branch is not None and any(a is branch for a in prog.index.ancestors(n)):
            plus_one = n
    for n in walk_own(fi.node):
        # piece.replace("▁", " ") keeps the space as one byte inside the LUT: same as a +1
        if isinstance(n, ast.Call) and call_name(n) == "replace" and len(n.args) >= 2 and \
                isinstance(n.args[0], ast.Constant) and n.args[0].value in (SPACE, "▁") and \
                isinstance(n.args[1], ast.Constant) and n.args[1].value == " ":
            plus_one = plus_one or n
            stripped = True
    if plus_one is not None and eval_adds_space:
        fails.append(("the leading space is counted twice: the byte LUT adds 1 for '▁' pieces and the eval adds "
                      "has_leading_space again (≈17% more bytes, issue #1719)", [prog.evidence(plus_one)]))
    elif not stripped and eval_adds_space:
        fails.append(("the '▁' of leading-space pieces is not stripped in the byte LUT (3 bytes) while the eval "
                      "adds the space again", [prog.evidence(sw_nodes[0])]))
    elif plus_one is not None:
        notes.append("the LUT counts the leading space itself (+1) and the eval does not add it")
    return fails, reviews, notes


def _eval_adds_space(prog) -> bool:
    for n in ast.walk(prog.index.tree):
        if isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, (ast.Add, ast.BitAnd)):
            if LEADING.search(ast.unparse(n)):
                fn = prog.index.function_of(n)
                if fn is None or not any(call_name(c) == "id_to_piece" for c in walk_own(fn.node) if isinstance(c, ast.Call)):
                    return True
    return False


_TOKENIZE = re.compile(r"^(encode|encode_as_ids|EncodeAsIds|encode_as_pieces|tokenize|Encode)$")
_LOSSY = {"lower", "casefold"}


def _lossy_normalization(index, file: str) -> list[Evidence]:
    out = []
    for fi in [None, *index.all_functions()]:
        body = index.tree if fi is None else fi.node
        defs: dict[str, list[ast.expr]] = {}
        nodes = list(walk_own(body))
        for n in nodes:
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    if isinstance(t, ast.Name):
                        defs.setdefault(t.id, []).append(n.value)
        for n in nodes:
            if not (isinstance(n, ast.Call) and _TOKENIZE.match(call_name(n)) and isinstance(n.func, ast.Attribute)
                    and re.search(r"(sp|tok|piece|processor|bpe|spm)", dotted(n.func.value), re.I) and n.args):
                continue
            frontier: list[ast.AST] = [n.args[0]]
            seen: set[str] = set()
            for _ in range(4):
                nxt: list[ast.AST] = []
                for e in frontier:
                    for m in ast.walk(e):
                        if isinstance(m, ast.Call) and call_name(m) in _LOSSY:
                            out.append(Evidence(source="code", file=file, line=m.lineno, text=index.line_text(m.lineno)))
                            break
                        if isinstance(m, ast.Name) and m.id in defs and m.id not in seen:
                            seen.add(m.id)
                            nxt += defs[m.id]
                frontier = nxt
    return out


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    fails: list[tuple[str, list[Evidence]]] = []
    reviews: list[tuple[str, list[Evidence]]] = []
    warns: list[tuple[str, list[Evidence]]] = []
    notes: list[str] = []

    config = ctx.run_config()
    vocab = parse_literal(config.get("vocab_size", "")) if config.get("vocab_size") else None
    for log in ctx.submission.logs:
        vt = getattr(log, "val_tokens", None)
        if not vt or not isinstance(vocab, int) or vocab not in KNOWN_VAL_TOKENS or LEAKY[0] <= vt <= LEAKY[1]:
            continue
        known = KNOWN_VAL_TOKENS[vocab]
        if vt in known:
            continue
        ll = log.where.get("val_tokens") if getattr(log, "where", None) else None
        ev = [log_ev(log.file, ll.line if ll else None, ll.text if ll else f"val_tokens: {vt}")]
        if vt < 0.5 * min(known):
            reviews.append((f"{log.file}: {vt:,} validation tokens is far below the full split for a "
                            f"{vocab}-token vocabulary ({', '.join(f'{k:,}' for k in sorted(known))}): a subset?", ev))
        else:
            warns.append((f"{log.file}: {vt:,} validation tokens matches no known split for vocab {vocab} "
                          "(custom tokenizer?)", ev))

    prog, early = program_for(me, ctx)
    if prog is not None:
        adds = _eval_adds_space(prog)
        builders = _lut_builders(prog.index)
        if not builders and not re.search(r"val_bytes|bytes_sidecar|sidecar", prog.source.text):
            warns.append(("no SentencePiece byte LUT builder (id_to_piece / is_byte) in the script: check how "
                          "the BPB byte counts are computed", []))
        for fi in builders:
            f, r, n = _lut_findings(prog, fi, adds)
            fails += f
            reviews += r
            notes += n
        lossy = _lossy_normalization(prog.index, prog.file)
        if lossy:
            reviews.append(("text is lowercased/casefolded before tokenization: lossy normalization is unresolved "
                            "(#1604) and the decoded tokens no longer reproduce the validation bytes", lossy[:3]))
        if re.search(r"val_bytes|_bytes_\*|bytes_sidecar|sidecar", prog.source.text):
            notes.append("BPB uses a byte sidecar (lossless transform, accepted since #1729/#1736)")
    for src in other_sources(ctx):
        try:
            idx = get_index(src.text)
        except ParseFailure:
            continue
        lossy = _lossy_normalization(idx, src.path)
        if lossy:
            reviews.append((f"{src.path} lowercases/casefolds text before tokenization (lossy normalization, #1604)",
                            lossy[:3]))

    if fails:
        return result(me, "fail", fails[0][0], evidence=[e for _, es in fails for e in es][:6])
    if reviews:
        return result(me, "needs_review", reviews[0][0], evidence=[e for _, es in reviews for e in es][:6])
    if warns:
        return result(me, "warn", warns[0][0], evidence=[e for _, es in warns for e in es][:6])
    if prog is None and early is not None and not ctx.submission.logs:
        return early
    if prog is None and early is not None:
        if early.outcome == "needs_review":
            return early
        return result(me, "not_applicable", "no training script in the submission; the log fingerprints match")
    msg = "the byte LUT matches the canonical accounting"
    if notes:
        msg += "; " + "; ".join(notes)
    return result(me, "pass", msg)
