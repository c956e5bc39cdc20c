"""The shape of test-time training: where weights are updated on validation data, and whether the
same tokens were scored (accumulated into the reported loss) before that update.

Vocabulary:
  train site  — a `.backward()` on validation-derived values, or a call to a function that does one
  score event — a no_grad/inference_mode block that runs the model on validation data, an
                `acc += <validation-derived loss>` into a loss/nll accumulator, or a call to a
                function that scores validation data

For each train site the innermost enclosing loop with a score event *before* it is its score-first
loop (the chunk / document loop). Kinds, worst first:
  train_only          no score precedes the update anywhere (pre-quant TTT, adapt-then-score)
  train_then_score    the same loop scores only after updating
  score_in_epoch      the score-first loop is (inside) an epoch loop: tokens are re-scored after
                      they were trained on, and the last epoch's numbers are what gets reported
  warmup              updates on validation tokens in a compile warm-up
  score_all_then_train  the whole split is scored, then trained on (harmless unless re-scored)
  score_first         legal chunked / per-document score-then-train
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .env import UNKNOWN, Switches, truthy
from .index import FunctionInfo, ModuleIndex, dotted, is_no_grad_with, position
from .taint import Taint

ACC_RE = re.compile(r"(loss|nll|bits|logp|log_prob|score|ce_sum|xent|neg_log)", re.I)
EPOCH_RE = re.compile(r"(^|_)(ep|epoch|epochs|epoch_idx|ep_i)(_|$|\d)", re.I)
NOT_EPOCH = re.compile(r"(len\(|doc|chunk|batch|window|seq|tok|num_|n_)", re.I)
WARM_RE = re.compile(r"warm", re.I)

BAD_KINDS = ("train_only", "train_then_score", "score_in_epoch")
RANK = {"train_only": 6, "train_then_score": 5, "score_in_epoch": 4, "warmup": 3,
        "score_all_then_train": 2, "score_first": 1}


@dataclass
class Site:
    kind: str
    node: ast.AST              # the backward call / the call into a training function
    fn: FunctionInfo
    loop: ast.AST | None = None        # the score-first loop, when there is one
    epoch_loop: ast.AST | None = None  # the enclosing epoch loop that re-scores
    via: "Site | None" = None          # for a call site, the classification inside the callee
    guarded_last: bool = False         # training skipped on the last chunk (`if not is_last_chunk`)

    @property
    def line(self) -> int:
        inner = self
        while inner.via is not None and inner.kind == inner.via.kind:
            inner = inner.via
        return getattr(inner.node, "lineno", 0)


class TTTAnalysis:
    def __init__(self, index: ModuleIndex, taint: Taint, switches: Switches):
        self.index, self.taint, self.switches = index, taint, switches
        self._direct_sites: dict[str, list[ast.Call]] = {}
        self._trains: dict[str, bool] = {}
        self._scores: dict[str, bool] = {}
        self._score_events: dict[str, list[ast.AST]] = {}
        self._classify: dict[str, Site | None] = {}
        self._def_pos: dict[str, dict[str, list[tuple[int, int]]]] = {}

    # -- per-function facts ------------------------------------------------------------------
    def direct_train_sites(self, fi: FunctionInfo) -> list[ast.Call]:
        hit = self._direct_sites.get(fi.qualname)
        if hit is None:
            hit = []
            for n in self.index.own(fi.node):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                        n.func.attr == "backward" and self.taint.expr(fi, n.func.value):
                    hit.append(n)
                elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                        n.func.attr == "grad" and n.args and self.taint.expr(fi, n.args[0]):
                    hit.append(n)
            self._direct_sites[fi.qualname] = hit
        return hit

    def trains_val(self, fi: FunctionInfo) -> bool:
        hit = self._trains.get(fi.qualname)
        if hit is None:
            self._trains[fi.qualname] = False
            hit = bool(self.direct_train_sites(fi)) or any(
                self.trains_val(t) for c in fi.calls if self.switches.off_guard(c) is None
                for t in self.index.resolve_call(c, with_fn_args=True) if t.qualname != fi.qualname)
            self._trains[fi.qualname] = hit
        return hit

    def score_events(self, fi: FunctionInfo) -> list[ast.AST]:
        hit = self._score_events.get(fi.qualname)
        if hit is not None:
            return hit
        self._score_events[fi.qualname] = []
        ev: list[ast.AST] = []
        for n in self.index.own(fi.node):
            if is_no_grad_with(n):
                # a no-grad block scores only when it accumulates a loss (or calls a scorer): a
                # frozen feature pass (SLOT's `hid = backbone(x)`) is not a score
                if any(isinstance(c, ast.Call) and self.taint.expr(fi, c) for c in ast.walk(n)) and \
                        self._accumulates(fi, n):
                    ev.append(n)
            elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
                tname = _target_name(n.target)
                if tname and ACC_RE.search(tname) and self.taint.expr(fi, n.value):
                    ev.append(n)
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                    n.func.attr in ("append", "extend", "index_add_", "scatter_add_") and \
                    ACC_RE.search(_target_name(n.func.value) or "") and \
                    any(self.taint.expr(fi, a) for a in n.args):
                ev.append(n)
            elif isinstance(n, ast.Call) and self.switches.off_guard(n) is None:
                for t in self.index.resolve_call(n, with_fn_args=True):
                    if t.qualname != fi.qualname and self.scores_val(t) and not self.trains_val(t):
                        ev.append(n)
                        break
        if fi.no_grad and any(isinstance(c, ast.Call) and self.taint.expr(fi, c) for c in self.index.own(fi.node)):
            ev.append(fi.node)
        self._score_events[fi.qualname] = ev
        return ev

    def _accumulates(self, fi: FunctionInfo, block: ast.AST) -> bool:
        for c in ast.walk(block):
            if isinstance(c, ast.Call) and dotted(c.func).split(".")[-1] in ("cross_entropy", "nll_loss") and \
                    any(k.arg == "reduction" and isinstance(k.value, ast.Constant) and k.value.value in ("none", "sum")
                        for k in c.keywords):
                return True                  # per-token (or summed) losses: the scoring form
            if isinstance(c, ast.AugAssign) and isinstance(c.op, (ast.Add, ast.Sub)):
                return True
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and \
                    c.func.attr in ("append", "extend", "index_add_", "scatter_add_", "add_", "copy_"):
                return True
            if isinstance(c, ast.Subscript) and isinstance(c.ctx, ast.Store):
                return True                  # per-token losses written into a buffer
            if isinstance(c, ast.Return) and c.value is not None:
                return True
            if isinstance(c, ast.Call):
                for t in self.index.resolve_call(c, with_fn_args=True):
                    if t.qualname != fi.qualname and self.scores_val(t) and not self.trains_val(t):
                        return True
        return False

    def scores_val(self, fi: FunctionInfo) -> bool:
        hit = self._scores.get(fi.qualname)
        if hit is None:
            self._scores[fi.qualname] = False
            hit = bool(self.score_events(fi))
            self._scores[fi.qualname] = hit
        return hit

    # -- classification ------------------------------------------------------------------------
    def classify(self, fi: FunctionInfo) -> Site | None:
        """The worst train site of `fi` (None when it does not train on validation data)."""
        if fi.qualname in self._classify:
            return self._classify[fi.qualname]
        self._classify[fi.qualname] = None
        sites: list[Site] = []
        for b in self.direct_train_sites(fi):
            if self.switches.off_guard(b) is None:
                sites.append(self._site(fi, b, None))
        for c in fi.calls:
            if self.switches.off_guard(c) is not None:
                continue
            for t in self.index.resolve_call(c, with_fn_args=True):
                if t.qualname == fi.qualname or not self.trains_val(t):
                    continue
                inner = self.classify(t)
                if inner is None:
                    continue
                if inner.kind in BAD_KINDS and inner.kind != "train_only":
                    sites.append(Site(inner.kind, c, fi, via=inner))
                elif inner.kind == "train_only":
                    # the callee only trains: whether that is legal depends on where it is called
                    outer = self._site(fi, c, inner)
                    sites.append(outer)
                else:
                    sites.append(Site(inner.kind, c, fi, inner.loop, inner.epoch_loop, via=inner,
                                      guarded_last=inner.guarded_last))
        worst = max(sites, key=lambda s: RANK[s.kind], default=None)
        self._classify[fi.qualname] = worst
        return worst

    def classify_call(self, owner: FunctionInfo | None, call: ast.Call, callee: FunctionInfo) -> Site | None:
        """`callee`'s train site as seen from one call: a helper that only trains is legal or not
        by where it is called (inside the caller's chunk loop, after that chunk was scored)."""
        inner = self.classify(callee)
        if inner is None or inner.kind != "train_only" or owner is None:
            return inner
        return self._site(owner, call, inner)

    def _site(self, fi: FunctionInfo, node: ast.AST, via: Site | None) -> Site:
        events = self.score_events(fi)
        pos = position(node)
        loops = self.index.enclosing_loops(node)
        warm = self._is_warmup(fi, node, loops)
        for loop in loops:
            before = [e for e in events if position(e) < pos and _inside(self.index, e, loop)]
            # `loss = model(x, y); loss.backward(); opt.step(); loss_sum += loss.detach()` scores the
            # loss computed before the update: it counts as a score event before the update
            before += [e for e in events if position(e) > pos and _inside(self.index, e, loop)
                       and self._pre_update_value(fi, e, node)]
            if before:
                epoch = loop if self._is_epoch_loop(loop) else next(
                    (a for a in self.index.enclosing_loops(loop) if self._is_epoch_loop(a)), None)
                guarded = self._guarded_last(node)
                if epoch is not None:
                    return Site("score_in_epoch", node, fi, loop, epoch, via=via, guarded_last=guarded)
                return Site("score_first", node, fi, loop, via=via, guarded_last=guarded)
        if warm:
            return Site("warmup", node, fi, via=via)
        outermost = loops[-1] if loops else None
        before_fn = [e for e in events if position(e) < pos and (outermost is None or not _inside(self.index, e, outermost))]
        if before_fn:
            return Site("score_all_then_train", node, fi, via=via)
        if any(position(e) > pos for e in events):
            return Site("train_then_score", node, fi, loops[-1] if loops else None, via=via)
        return Site("train_only", node, fi, via=via)

    def _pre_update_value(self, fi: FunctionInfo, event: ast.AST, update: ast.AST) -> bool:
        """An accumulation whose value comes only from locals last assigned before `update`."""
        if not isinstance(event, ast.AugAssign):
            return False
        names = {n.id for n in ast.walk(event.value) if isinstance(n, ast.Name)}
        if not names:
            return False
        defs = self._defs(fi)
        upos, epos = position(update), position(event)
        found = False
        for name in names:
            prior = [p for p in defs.get(name, []) if p < epos]
            if not prior:
                continue
            if max(prior) > upos:
                return False        # reassigned after the update: a post-update value
            found = True
        return found

    def _defs(self, fi: FunctionInfo) -> dict[str, list[tuple[int, int]]]:
        hit = self._def_pos.get(fi.qualname)
        if hit is None:
            hit = {}
            for n in self.index.own(fi.node):
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        for x in ast.walk(t):
                            if isinstance(x, ast.Name):
                                hit.setdefault(x.id, []).append(position(n))
            self._def_pos[fi.qualname] = hit
        return hit

    def _is_epoch_loop(self, loop: ast.AST) -> bool:
        if not isinstance(loop, (ast.For, ast.AsyncFor)):
            return False
        tgt = loop.target.id if isinstance(loop.target, ast.Name) else ""
        epochish = bool(tgt and EPOCH_RE.search(tgt))
        if isinstance(loop.iter, ast.Call) and getattr(loop.iter.func, "id", "") == "range":
            args = loop.iter.args
            text = " ".join(ast.unparse(a) for a in args)
            if "epoch" in text.lower():
                epochish = True
            elif NOT_EPOCH.search(text):
                return False          # range(len(docs)), range(num_chunks): a data loop, whatever its name
            if epochish and len(args) == 1:
                n = self.switches.evaluate(args[0])
                if n is not UNKNOWN and isinstance(n, (int, float)) and not isinstance(n, bool) and n <= 1:
                    return False      # a single epoch is a single pass
        return epochish

    def _guarded_last(self, node: ast.AST) -> bool:
        for g in self.index.guards(node):
            text = ast.unparse(g.test)
            if re.search(r"last|needs_train|(<|!=)\s*[\w.\[\]]+\s*-\s*1\b", text):
                return True
        return False

    def _is_warmup(self, fi: FunctionInfo, node: ast.AST, loops: list[ast.AST]) -> bool:
        if WARM_RE.search(fi.name):
            return True
        for loop in loops:
            text = ast.unparse(loop.target) + " " + ast.unparse(loop.iter) if isinstance(loop, ast.For) else ""
            if WARM_RE.search(text):
                return True
            # a comment or log line just above the loop naming the warm-up
            ln = getattr(loop, "lineno", 0)
            for k in range(max(1, ln - 3), ln):
                if WARM_RE.search(self.index.line_text(k)):
                    return True
        return False

    def epoch_count(self, loop: ast.AST | None) -> object:
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call) and loop.iter.args:
            return self.switches.evaluate(loop.iter.args[-1] if len(loop.iter.args) < 3 else loop.iter.args[1])
        return UNKNOWN


def _inside(index: ModuleIndex, node: ast.AST, container: ast.AST) -> bool:
    if node is container:
        return True
    return any(a is container for a in index.ancestors(node))


def _target_name(t: ast.AST) -> str | None:
    if isinstance(t, ast.Name):
        return t.id
    if isinstance(t, ast.Attribute):
        return t.attr
    if isinstance(t, ast.Subscript):
        return _target_name(t.value)
    return None


def on(value: object) -> bool | None:
    if value is UNKNOWN:
        return None
    return truthy(value)
