"""PG406 normalized-distribution — the scored probabilities form a full normalized distribution
over the vocabulary, computed over the whole validation split.

Rulings: #1017 C2 (p_t is a proper distribution over the whole official alphabet, fixed before
x_t is revealed: no bucket/hash-bin normalization, no normalization over the gold token only);
valerio-oai on #982 (caches that "do not renormalize correctly"); #978 (a correctly normalized
cache degrades #972 to 1.513 BPB); the PPM-D / byte-mixture cluster (issue #1872, analysis #1905:
the neural token probability spread as p**(1/n_bytes) per byte and mixed with a byte PPM does not
sum to 1 over token ids), excluded as "PPM-D/byte-mixture C2" in #1902; subset scoring
(`PPM_SUBSET_TOKENS`, #1835; #1881: mixture BPB on 3M/8M tokens instead of the full split).

Fires (fail), in code that runs at evaluation under the logged configuration:
- a per-byte spread of a token probability: `exp(logp / n_bytes)`, `p ** (1 / n_bytes)`, or the same
  spread in log space (`token_logp / n_bytes`, #1835 family; a total such as `nll_sum / total_bytes`
  is the BPB formula and does not count);
- a subset switch (`PPM_SUBSET_TOKENS`, `EVAL_SUBSET`, `VAL_MAX_TOKENS`…) that is on;
- a count ratio read with a key that hashes the target into a bucket, mixed into the scored
  probability (gold-only "probability", bucket normalization); the numerator is followed through
  earlier assignments and nested per-order tables (`tables[n][key]`).
needs_review: a count ratio with a per-context denominator (not a `.sum()` over the vocabulary)
mixed into the score — normalization cannot be confirmed statically; a `*_FRAC` switch below 1
(`VAL_DOC_FRACTION`) that may select a subset of the scored documents.
Does not fire on: softmax/log_softmax/logsumexp distributions, mixtures of full-vocab vectors,
ratios normalized by a `.sum()` over the vocabulary, switches that are off (said so).
No training script: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys

from ..analysis import program_for
from ..analysis.env import UNKNOWN, truthy
from ..analysis.index import dotted, table_base, walk_own
from ..analysis.ngram import tables_of
from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import result, safe_check

ID = "normalized-distribution"
CODE = "PG406"
TITLE = "Scored probabilities are a normalized distribution over the vocabulary"

BYTE_NAME = re.compile(r"(byte|^nb$|^n_b$|^blen$|^nbyt)", re.I)
SUBSET = re.compile(r"(SUBSET|(VAL|EVAL)_\w*(MAX_TOKENS|TOKEN_LIMIT|TOKENS_LIMIT|MAX_DOCS|FRAC)|MAX_EVAL_TOKENS)", re.I)
LOGP_NAME = re.compile(r"(logp|log_prob|logprob|nll)", re.I)
TOTAL_NAME = re.compile(r"(total|sum|count|cnt|tot_|all_|mean)", re.I)
COUNT_TABLE = re.compile(r"(count|cnt|freq|table|hash|bucket|full|ngram|gram|ctx|pair|hist)", re.I)
MIX_WEIGHT = re.compile(r"(alpha|lam|lambda|w_|weight|mix|beta|gate|a\b)", re.I)


def check(ctx: AuditContext) -> RuleResult:
    return safe_check(sys.modules[__name__], _check, ctx)


def _byte_spread(n: ast.AST) -> bool:
    """exp(x / n_bytes), x ** (1 / n_bytes), pow(x, 1.0 / n_bytes)."""
    def div_by_bytes(e: ast.AST) -> bool:
        return isinstance(e, ast.BinOp) and isinstance(e.op, ast.Div) and BYTE_NAME.search(ast.unparse(e.right)) is not None
    if isinstance(n, ast.Call) and dotted(n.func).split(".")[-1] in ("exp", "exp2", "pow", "power") and n.args:
        arg = n.args[-1] if dotted(n.func).split(".")[-1] in ("pow", "power") else n.args[0]
        return div_by_bytes(arg)
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow):
        return div_by_bytes(n.right)
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and div_by_bytes(n):
        # the same spread written in log space (`token_logp / n_bytes`, PPM-D byte mixtures, #1835
        # family); a total over the split (`nll_sum / total_bytes`) is the BPB formula, not a spread
        left, right = ast.unparse(n.left), ast.unparse(n.right)
        return LOGP_NAME.search(left) is not None and not TOTAL_NAME.search(left + " " + right)
    return False


def _is_mixture(e: ast.AST) -> bool:
    """(1 - a) * p + a * q  — an additive mixture with a weight."""
    if not (isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add)):
        return False
    text = ast.unparse(e)
    return bool(re.search(r"\(1(\.0)?\s*-\s*", text)) or (
        isinstance(e.left, ast.BinOp) and isinstance(e.left.op, ast.Mult) and
        isinstance(e.right, ast.BinOp) and isinstance(e.right.op, ast.Mult) and MIX_WEIGHT.search(text) is not None)


def _count_ratio(ft, e: ast.AST) -> tuple[ast.BinOp, bool] | None:
    """A Div whose numerator reads a count table and whose denominator is not a sum over the
    vocabulary; with whether the numerator's key hashes in the target."""
    for n in ast.walk(e):
        if not (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)):
            continue
        den = ast.unparse(n.right)
        if ".sum(" in den or "sum(" in den.replace(" ", "")[:4]:
            continue
        # the numerator may reach the table through an earlier line (`full = tables[n][key]`,
        # then `np.minimum(full, ctx) / ...`), and the tables may be nested per order
        subs = [s for x in ft.closure(n.left) for s in ast.walk(x)
                if isinstance(s, ast.Subscript) and COUNT_TABLE.search(table_base(s.value) or "")]
        if not subs:
            continue
        hashed_target = any(ft.combines_target(s.slice) is not None for s in subs)
        return n, hashed_target
    return None


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    sw = prog.switches
    fails: list[tuple[str, list[Evidence]]] = []
    reviews: list[tuple[str, list[Evidence]]] = []
    offs: list[Evidence] = []
    for r in sw.reads:
        if not SUBSET.search(r.var):
            continue
        v = sw.read_state(r)
        if v is UNKNOWN:
            reviews.append((f"{r.var} may restrict scoring to a subset of the validation tokens", [prog.evidence(r.line)]))
        elif truthy(v) and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0) and \
                not (isinstance(v, (int, float)) and v >= 1.0 and "FRAC" in r.var.upper()):
            msg = f"{r.var}={v} scores a subset of the validation tokens instead of the full split"
            if "FRAC" in r.var.upper() and "SUBSET" not in r.var.upper():
                reviews.append((msg + " (if it selects the scored documents)", [prog.evidence(r.line)]))
            else:
                fails.append((msg, [prog.evidence(r.line)]))
        else:
            offs.append(prog.evidence(r.line, f"{r.var}={v}: off"))
    reach = prog.flow.reachable("any")
    for fi in prog.index.all_functions():
        hit = reach.get(fi.qualname)
        if hit is None and not prog.flow.in_chain(fi):
            continue
        running = True if hit is None else hit[1]
        ft = None
        for n in walk_own(fi.node):
            if _byte_spread(n):
                ev = [prog.evidence(n, "token probability spread per byte")]
                if not running or sw.off_guard(n):
                    offs += ev
                else:
                    fails.append((f"{fi.name}() spreads a token probability over its bytes "
                                  f"({ast.unparse(n)[:60]}); mixed per byte it is not a distribution over "
                                  "the vocabulary (#1872, #1902)", ev))
            if isinstance(n, (ast.Assign, ast.AugAssign)) and _is_mixture(n.value):
                ft = ft or tables_of(fi)
                for e in ft.closure(n.value, depth=3, elements=True):
                    hit_ratio = _count_ratio(ft, e)
                    if hit_ratio is None:
                        continue
                    div, hashed = hit_ratio
                    ev = [prog.evidence(div, "count ratio used as a probability"), prog.evidence(n, "mixed into the score")]
                    if not running or sw.off_guard(n):
                        offs += ev
                    elif hashed:
                        fails.append((f"{fi.name}() mixes a gold-token count ratio from a hashed bucket into the "
                                      "score; it is not normalized over the vocabulary (#982, #1017 C2)", ev))
                    else:
                        reviews.append((f"{fi.name}() mixes a count ratio ({ast.unparse(div)[:50]}) into the score; "
                                        "its normalization over the vocabulary cannot be confirmed statically", ev))
                    break
    if fails:
        return result(me, "fail", fails[0][0], evidence=[e for _, es in fails for e in es][:6])
    if reviews:
        return result(me, "needs_review", reviews[0][0], evidence=[e for _, es in reviews for e in es][:6])
    if offs:
        return result(me, "pass", "an unnormalized or subset scoring path exists but is off under the logged "
                      "configuration", evidence=offs[:4])
    return result(me, "pass", "no unnormalized mixture, per-byte spread or subset scoring found")
