"""The main flow of a training script: where the entry is (`main()` or module level), where the
training loop ends, which calls run after it (the evaluation phase), and which functions those calls
reach — each call marked on/off by the env switches the logged configuration resolves.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .env import Switches
from .index import FunctionInfo, ModuleIndex, call_name
from .taint import Taint, is_train_data_name

OPT_STEP_NAMES = ("opt", "optim", "optimizer", "muon", "adam", "sgd", "scaler")


@dataclass
class CallSite:
    call: ast.Call
    line: int
    targets: list[FunctionInfo]
    off: tuple[ast.expr, int] | None   # the guard that switches it off, when one does
    phase: str                          # "pre" (before/during training) or "eval"
    order: int                          # position in the entry flow


@dataclass
class Flow:
    index: ModuleIndex
    switches: Switches
    taint: Taint
    entry: FunctionInfo | None                   # main(), when there is one
    chain: list[FunctionInfo]                    # main() and the functions it descends into
                                                 # (main -> train_and_eval) to find the real phases
    plan: list[tuple[str, ast.stmt, FunctionInfo | None]]   # (phase, statement, owner) in run order
    train_end: int | None                        # position in `plan` of the last training statement
    sites: list[CallSite] = field(default_factory=list)      # calls in the entry flow, in order
    _reach: dict[str, dict[str, tuple[CallSite, bool]]] = field(default_factory=dict)

    def in_chain(self, fi: FunctionInfo | None) -> bool:
        return fi is not None and any(fi is c for c in self.chain)

    def statements(self, phase: str) -> list[tuple[ast.stmt, FunctionInfo | None]]:
        return [(st, owner) for ph, st, owner in self.plan if ph == phase]

    def reachable(self, phase: str = "eval") -> dict[str, tuple[CallSite, bool]]:
        """qualname -> (the entry-flow call site that reaches it, whether it runs). A function
        reached only through switched-off calls maps to running=False."""
        hit = self._reach.get(phase)
        if hit is not None:
            return hit
        out: dict[str, tuple[CallSite, bool]] = {}
        for site in self.sites:
            if phase != "any" and site.phase != phase and not (phase == "eval" and site.phase == "unknown"):
                continue
            on = site.off is None
            stack = [(t, on) for t in site.targets]
            while stack:
                fi, running = stack.pop()
                prev = out.get(fi.qualname)
                if prev is not None and (prev[1] or not running):
                    continue
                out[fi.qualname] = (site, running)
                for c in fi.calls:
                    off = self.switches.off_guard(c)
                    for t in self.index.resolve_call(c, with_fn_args=True):
                        if t.qualname != fi.qualname:
                            stack.append((t, running and off is None))
        self._reach[phase] = out
        return out


def _is_backward(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and call.func.attr == "backward"


def _is_opt_step(call: ast.Call) -> bool:
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "step"):
        return False
    base = call.func.value
    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    if isinstance(base, ast.Subscript):
        name = getattr(base.value, "id", "") or getattr(base.value, "attr", "")
    return any(k in name.lower() for k in OPT_STEP_NAMES)


class _TrainMemo:
    """Memoised "does this function train weights on non-validation data" per function."""

    def __init__(self, index: ModuleIndex, taint: Taint):
        self.index, self.taint = index, taint
        self.fn: dict[str, bool] = {}
        self.val_backward: dict[str, bool] = {}
        self.train_reads: dict[str, bool] = {}

    def has_val_backward(self, owner: FunctionInfo | None) -> bool:
        key = owner.qualname if owner else "<module>"
        hit = self.val_backward.get(key)
        if hit is None:
            body = owner.node if owner else self.index.tree
            hit = any(isinstance(c, ast.Call) and _is_backward(c) and self.taint.expr(owner, c.func.value)  # type: ignore[union-attr]
                      for c in self.index.own(body))
            self.val_backward[key] = hit
        return hit

    def node(self, node: ast.AST) -> bool:
        for n in (ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  else self.index.own(node)):
            if not isinstance(n, ast.Call):
                continue
            owner = self.index.function_of(n)
            if _is_backward(n) and not self.taint.expr(owner, n.func.value):  # type: ignore[union-attr]
                return True
            if _is_opt_step(n) and not self.has_val_backward(owner):
                return True
            for t in self.index.resolve_call(n):
                if self.function(t):
                    return True
        return False

    def reads_train(self, node: ast.AST) -> bool:
        """Whether `node` (or what it calls) mentions training data (`train_loader`, train files)."""
        for n in (ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  else self.index.own(node)):
            name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None
            if name and is_train_data_name(name):
                return True
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and "train_" in n.value and ".bin" in n.value:
                return True
            if isinstance(n, ast.Call):
                for t in self.index.resolve_call(n):
                    hit = self.train_reads.get(t.qualname)
                    if hit is None:
                        self.train_reads[t.qualname] = False
                        hit = self.reads_train(t.node)
                        self.train_reads[t.qualname] = hit
                    if hit:
                        return True
        return False

    def function(self, fi: FunctionInfo) -> bool:
        hit = self.fn.get(fi.qualname)
        if hit is None:
            self.fn[fi.qualname] = False      # in progress: recursion counts as "no"
            hit = self.node(fi.node)
            self.fn[fi.qualname] = hit
        return hit


_MEMOS: dict[int, _TrainMemo] = {}


def train_memo(index: ModuleIndex, taint: Taint) -> _TrainMemo:
    m = _MEMOS.get(id(index))
    if m is None or m.index is not index or m.taint is not taint:
        if len(_MEMOS) > 8:
            _MEMOS.clear()
        m = _MEMOS[id(index)] = _TrainMemo(index, taint)
    return m


def trains_weights(index: ModuleIndex, taint: Taint, node: ast.AST) -> bool:
    """Whether `node` contains (directly or through calls) a backward/optimizer step on data
    that is not validation data — the training loop and the warm-up."""
    return train_memo(index, taint).node(node)


EVAL_WORK = ("eval", "score", "serializ", "save", "quantiz", "gptq", "compress", "ttt")


def _last_training(index: ModuleIndex, switches: Switches, taint: Taint, body: list[ast.stmt]) -> int | None:
    """The last statement that updates weights on training data (a compile warm-up on random
    tokens updates weights too, but reads no training data, so it does not end training)."""
    memo = train_memo(index, taint)
    last = last_any = None
    for i, stmt in enumerate(body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if switches.off_guard(stmt) is not None:
            continue
        if memo.node(stmt):
            last_any = i
            if memo.reads_train(stmt):
                last = i
    return last if last is not None else last_any


def _descend_target(index: ModuleIndex, switches: Switches, taint: Taint, stmt: ast.stmt,
                    seen: set[str]) -> FunctionInfo | None:
    """A function called by the training statement that itself trains and then evaluates
    (`train_and_eval`): the phases live inside it."""
    for c in (n for n in ast.walk(stmt) if isinstance(n, ast.Call)):
        for g in index.resolve_call(c):
            if g.qualname in seen:
                continue
            te = _last_training(index, switches, taint, list(g.node.body))
            if te is None:
                continue
            after = g.node.body[te + 1:]
            names = " ".join(call_name(n).lower() for st in after for n in ast.walk(st) if isinstance(n, ast.Call))
            names += " " + " ".join(n.id.lower() for st in after for n in ast.walk(st) if isinstance(n, ast.Name))
            if any(w in names for w in EVAL_WORK):
                return g
    return None


def build_flow(index: ModuleIndex, switches: Switches, taint: Taint) -> Flow:
    mains = [f for f in index.functions.get("main", []) if f.cls is None]
    entry = mains[0] if mains else None
    module_body = [s for s in index.tree.body
                   if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                         ast.Import, ast.ImportFrom))]
    plan: list[tuple[str, ast.stmt, FunctionInfo | None]] = []
    chain: list[FunctionInfo] = []
    if entry is not None:
        plan += [("pre", s, None) for s in module_body if not _calls_main(s, entry)]

    def expand(body: list[ast.stmt], owner: FunctionInfo | None, depth: int) -> bool:
        te = _last_training(index, switches, taint, body)
        if te is None:
            return False
        plan.extend(("pre", s, owner) for s in body[:te])
        g = _descend_target(index, switches, taint, body[te], {c.qualname for c in chain}) if depth < 4 else None
        if g is not None:
            chain.append(g)
            expand(list(g.node.body), g, depth + 1)
        else:
            plan.append(("train", body[te], owner))
        plan.extend(("eval", s, owner) for s in body[te + 1:])
        return True

    if entry is not None:
        chain.append(entry)
        found = expand(list(entry.node.body), entry, 0)
        if not found:
            plan += [("unknown", s, entry) for s in entry.node.body]
    else:
        found = expand(module_body, None, 0)
        if not found:
            plan += [("unknown", s, None) for s in module_body]
    train_pos = max((i for i, (ph, _, _) in enumerate(plan) if ph == "train"), default=None)
    flow = Flow(index, switches, taint, entry, chain, plan, train_pos)
    order = 0
    for phase, stmt, owner in plan:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        site_phase = "pre" if phase == "train" else phase
        calls = sorted((n for n in ast.walk(stmt) if isinstance(n, ast.Call)), key=lambda c: (c.lineno, c.col_offset))
        for c in calls:
            if index.function_of(c) is not owner:
                continue
            targets = [t for t in index.resolve_call(c, with_fn_args=True)
                       if not any(t is ch for ch in chain)]
            flow.sites.append(CallSite(c, c.lineno, targets, switches.off_guard(c), site_phase, order))
            order += 1
    return flow


def _calls_main(stmt: ast.stmt, entry: FunctionInfo) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry.name
               for n in ast.walk(stmt))


def later_sites(flow: Flow, site: CallSite) -> list[CallSite]:
    return [s for s in flow.sites if s.order > site.order]


def call_label(call: ast.Call) -> str:
    return call_name(call) or "call"
