"""Facts several code rules ask about one analysed script: where validation data is trained on,
where the model is serialized, which calls read training data after the training loop, and log
evidence helpers."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator

from ..model import Evidence
from .flow import CallSite, train_memo
from .index import FunctionInfo, call_name, walk_own
from .program import Program
from .taint import is_train_data_name
from .ttt import Site

SAVE_CALLS = {"save", "savez", "savez_compressed", "save_file"}
COMPRESS_CALLS = {"compress"}


@dataclass
class ValTraining:
    site: CallSite | None       # the entry-flow call (None: directly in the entry function)
    fn: FunctionInfo
    cls: Site
    off: bool


def val_training(prog: Program) -> Iterator[ValTraining]:
    """Every entry-flow call that (transitively) updates weights on validation data."""
    ttt = prog.ttt
    for site in prog.flow.sites:
        for fn in site.targets:
            if ttt.trains_val(fn):
                cls = ttt.classify(fn)
                if cls is not None:
                    yield ValTraining(site, fn, cls, site.off is not None)
    for fn in prog.flow.chain:
        for b in ttt.direct_train_sites(fn):
            yield ValTraining(None, fn, ttt._site(fn, b, None), prog.switches.off_guard(b) is not None)


def _saves(prog: Program, fn: FunctionInfo, seen: set[str]) -> bool:
    if fn.qualname in seen:
        return False
    seen.add(fn.qualname)
    for c in fn.calls:
        name = call_name(c)
        if name in SAVE_CALLS or name in COMPRESS_CALLS:
            return True
        if any(_saves(prog, t, seen) for t in prog.index.resolve_call(c)):
            return True
    return False


def serialization_site(prog: Program) -> CallSite | None:
    """The first entry-flow call after training that writes/compresses the model."""
    for s in prog.flow.sites:
        if s.phase != "eval" and prog.flow.train_end is not None:
            continue
        if call_name(s.call) in SAVE_CALLS | COMPRESS_CALLS or any(_saves(prog, t, set()) for t in s.targets):
            return s
    return None


def line_order(prog: Program, node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def train_data_reads(prog: Program, phase: str = "eval") -> list[tuple[ast.AST, str, bool]]:
    """(node, name, runs) for reads of training data (`args.train_files`, `train_loader`, ...) in
    code that runs in `phase`: the entry statements of that phase and the functions they reach."""
    out: list[tuple[ast.AST, str, bool]] = []
    flow = prog.flow
    if flow.train_end is None:
        return out
    memo = train_memo(prog.index, prog.taint)

    def constructed(n: ast.AST) -> str | None:
        """`ShuffledSequenceLoader(h, device)` / `load_train_shards(...)`: a plain call into our code
        that reads training data (its files are `fineweb_train_*`)."""
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            for t in prog.index.resolve_call(n):
                if memo.reads_train(t.node):
                    return n.func.id
        return None

    for stmt, _owner in flow.statements(phase):
        runs = prog.switches.off_guard(stmt) is None
        for n in ast.walk(stmt):
            name = _data_name(n) or constructed(n)
            if name and (is_train_data_name(name) or isinstance(n, ast.Call)):
                out.append((n, name, runs and prog.switches.off_guard(n) is None))
    for qual, (site, running) in flow.reachable(phase).items():
        fi = prog.index.by_qualname.get(qual)
        if fi is None or fi.cls == "DistributedTokenLoader" or "loader" in (fi.cls or "").lower():
            continue
        for n in walk_own(fi.node):
            name = _data_name(n) or constructed(n)
            if name and (is_train_data_name(name) or isinstance(n, ast.Call)):
                out.append((n, name, running and prog.switches.off_guard(n) is None))
    return out


def _data_name(n: ast.AST) -> str | None:
    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
        return n.id
    if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
        return n.attr
    return None


def log_evidence(log, field: str, fallback: str) -> Evidence:
    where = getattr(log, "where", {}) or {}
    ll = where.get(field)
    if ll is not None:
        return Evidence(source="log", file=log.file, line=ll.line, text=ll.text.strip()[:300])
    return Evidence(source="log", file=log.file, line=None, text=fallback)


def referenced(prog: Program, fi: FunctionInfo) -> bool:
    """The function's name is used somewhere other than its own definition (dispatch tables,
    getattr strings, callbacks): a call the call graph may not see."""
    for n in ast.walk(prog.index.tree):
        if isinstance(n, ast.Name) and n.id == fi.name and isinstance(n.ctx, ast.Load):
            return True
        if isinstance(n, ast.Attribute) and n.attr == fi.name:
            return True
        if isinstance(n, ast.Constant) and n.value == fi.name:
            return True
    return False


def unreached_val_trainers(prog: Program) -> list[tuple[FunctionInfo, Site]]:
    """Functions that update weights on validation data without scoring first, that the main flow
    does not reach by name but that are referenced somewhere (dispatch dicts, getattr)."""
    reach = prog.flow.reachable("any")
    out = []
    for fi in prog.index.all_functions():
        if fi.qualname in reach or prog.flow.in_chain(fi) or not prog.ttt.trains_val(fi):
            continue
        cls = prog.ttt.classify(fi)
        if cls is not None and cls.kind in ("train_only", "train_then_score", "score_in_epoch") and referenced(prog, fi):
            out.append((fi, cls))
    return out
