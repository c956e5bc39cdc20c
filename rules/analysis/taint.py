"""A light def-use: which values in each function derive from validation data (or training data).

A value is tainted when its expression mentions a tainted local, a validation-looking name
(`val_tokens`, `args.val_files`, `val_np`, a `fineweb_val_*` glob), or the result of a function
that returns tainted data. Assignments (with tuple unpacking and augmented assignment), `for`
targets, `with ... as` targets and subscript stores (`x_batch[i] = chunk[:-1]`) propagate it;
sizes (`len`, `.numel()`, `.shape`, `.size()`) do not, so loop counters stay clean. Parameters
become tainted when any call site passes tainted data (iterated to a fixed point).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from .index import FunctionInfo, ModuleIndex, call_name

SIZE_ATTRS = {"shape", "dtype", "device", "ndim", "numel", "size", "nbytes", "itemsize", "is_cuda"}
SIZE_CALLS = {"len", "numel", "size", "range", "isinstance", "print", "log0", "log", "int", "float"}

_VAL_DATA_PARTS = {"tokens", "toks", "tok", "data", "np", "ids", "seq", "seqs", "stream", "docs",
                   "doc", "shard", "shards", "loader", "files", "file", "set", "split", "arr",
                   "buf", "inputs", "input", "x", "y", "text", "texts", "dataset", "ds", "bin",
                   "bins", "pattern", "glob", "path", "paths", "memmap", "mm", "array", "targets"}
_VAL_WORDS = {"val", "valid", "validation"}
_TRAIN_DATA_PARTS = {"tokens", "toks", "loader", "files", "file", "stream", "shards", "shard",
                     "data", "dataset", "ds", "pattern", "glob", "np", "memmap", "bins", "iter"}


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"_+", name.lower()) if p]


@lru_cache(maxsize=8192)
def is_val_name(name: str) -> bool:
    parts = _parts(name)
    if not parts or not (_VAL_WORDS & set(parts)):
        return False
    return bool(_VAL_DATA_PARTS & set(parts))


_COUNT_PARTS = {"batch", "seq", "len", "size", "count", "num", "max", "per", "every", "steps", "step",
                "frac", "time", "ms", "limit", "loss", "bpb", "n"}


@lru_cache(maxsize=8192)
def is_train_data_name(name: str) -> bool:
    parts = set(_parts(name))
    return "train" in parts and bool(_TRAIN_DATA_PARTS & parts) and not (_COUNT_PARTS & parts)


@lru_cache(maxsize=4096)
def is_val_string(s: str) -> bool:
    s = s.lower()
    return "fineweb_val" in s or bool(re.search(r"(^|[/_*])val_[^/]*\.bin", s)) or s == "val"


@dataclass
class Taint:
    index: ModuleIndex
    name_pred: Callable[[str], bool]
    string_pred: Callable[[str], bool] | None = None
    skip: Callable[[ast.AST], bool] | None = None     # assignments on switched-off paths
    tainted: dict[str, set[str]] = field(default_factory=dict)       # qualname -> tainted locals
    params: dict[str, set[str]] = field(default_factory=dict)        # qualname -> tainted params
    returns: set[str] = field(default_factory=set)                  # qualnames returning tainted data
    _relevant: dict[str, list[ast.AST]] = field(default_factory=dict)
    _calls: dict[str, list[ast.Call]] = field(default_factory=dict)
    _returns: dict[str, list[ast.Return]] = field(default_factory=dict)
    _deps: dict[str, set[str]] = field(default_factory=dict)

    # -- expression taint ------------------------------------------------------------------
    def expr(self, fn: FunctionInfo | None, node: ast.AST | None) -> bool:
        if node is None:
            return False
        local = self.tainted.get(fn.qualname if fn else "<module>", set())
        return self._expr(node, local)

    def _expr(self, node: ast.AST, local: set[str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id in local or self.name_pred(node.id)
        if isinstance(node, ast.Constant):
            return bool(self.string_pred and isinstance(node.value, str) and self.string_pred(node.value))
        if isinstance(node, ast.Attribute):
            if node.attr in SIZE_ATTRS:
                return False
            if isinstance(node.value, ast.Name) and node.value.id == "self" and f"self.{node.attr}" in local:
                return True
            return self.name_pred(node.attr) or self._expr(node.value, local)
        if isinstance(node, ast.Call):
            cname = call_name(node)
            if cname in SIZE_CALLS:
                return False
            callees = [c for c in self.index.resolve_call(node) if c.name != "__init__"]
            if callees and not (isinstance(node.func, ast.Name) and node.func.id in self.index.classes):
                return self._local_call(node, callees, local)
            if isinstance(node.func, ast.Attribute) and self._expr(node.func.value, local):
                return True
            return any(self._expr(a, local) for a in node.args) or \
                any(self._expr(k.value, local) for k in node.keywords)
        if isinstance(node, ast.Subscript):
            return self._expr(node.value, local)
        if isinstance(node, (ast.Lambda, ast.FunctionDef)):
            return False
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # comprehension variables live in their own scope: `[shard(p) for p in train_files]`
            # must not pick up the taint of a `p` from `[shard(p) for p in val_files]` elsewhere
            inner = set(local)
            for gen in node.generators:
                names = self._targets(gen.target)
                if self._expr(gen.iter, inner):
                    inner.update(names)
                else:
                    inner.difference_update(names)
                if any(self._expr(cond, inner) for cond in gen.ifs):
                    inner.update(names)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            return any(self._expr(p, inner) for p in parts)
        return any(self._expr(c, local) for c in ast.iter_child_nodes(node))

    def _local_call(self, node: ast.Call, callees: list[FunctionInfo], local: set[str]) -> bool:
        """A call into the script's own functions is tainted when the callee returns validation
        data by itself, or when a tainted argument lands on a parameter its result depends on
        (so `train_model(h, device, val_data)` returning a model stays clean)."""
        for c in callees:
            if c.qualname in self.returns:
                return True
            deps = self.param_deps(c)
            if not deps:
                continue
            method = isinstance(node.func, ast.Attribute)
            offset = 1 if c.cls and method else 0
            if method and c.cls and c.params and c.params[0] in deps and self._expr(node.func.value, local):
                return True
            for i, a in enumerate(node.args):
                j = i + offset
                if isinstance(a, ast.Starred):
                    if self._expr(a.value, local):
                        return True
                    continue
                name = c.params[j] if j < len(c.params) else (c.node.args.vararg.arg if c.node.args.vararg else None)
                if name in deps and self._expr(a, local):
                    return True
            for kw in node.keywords:
                name = kw.arg if kw.arg in c.params else (c.node.args.kwarg.arg if c.node.args.kwarg else None)
                if name in deps and self._expr(kw.value, local):
                    return True
        return False

    def param_deps(self, fi: FunctionInfo) -> set[str]:
        """The parameters whose taint reaches `fi`'s return value (each tried alone)."""
        hit = self._deps.get(fi.qualname)
        if hit is not None:
            return hit
        self._deps[fi.qualname] = set()          # in progress: recursion sees no dependence
        rets = [n for n in self.index.own(fi.node) if isinstance(n, ast.Return) and n.value is not None]
        out: set[str] = set()
        if rets:
            nodes = self._nodes(fi.node, fi.qualname)
            for p in fi.params:
                local = {p}
                self._propagate(nodes, local)
                if any(self._expr(r.value, local) for r in rets):
                    out.add(p)
        self._deps[fi.qualname] = out
        return out

    # -- propagation -----------------------------------------------------------------------
    def _targets(self, t: ast.AST) -> list[str]:
        if isinstance(t, ast.Name):
            return [t.id]
        if isinstance(t, (ast.Tuple, ast.List)):
            return [n for e in t.elts for n in self._targets(e)]
        if isinstance(t, ast.Starred):
            return self._targets(t.value)
        if isinstance(t, ast.Subscript):      # x_batch[i, :n] = chunk[:-1] taints x_batch
            return self._targets(t.value)
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
            return [f"self.{t.attr}"]
        return []

    def _nodes(self, body_owner: ast.AST, key: str) -> list[ast.AST]:
        nodes = self._relevant.get(key)
        if nodes is None:
            nodes = [n for n in self.index.own(body_owner) if isinstance(n, _FLOW_NODES)]
            if self.skip is not None:
                nodes = [n for n in nodes if not self.skip(n)]
            self._relevant[key] = nodes
        return nodes

    def _propagate(self, nodes: list[ast.AST], local: set[str]) -> None:
        for _ in range(4):
            n0 = len(local)
            for node in nodes:
                if isinstance(node, ast.Assign):
                    if self._expr(node.value, local):
                        for t in node.targets:
                            local.update(self._targets(t))
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                    if self._expr(node.value, local):
                        local.update(self._targets(node.target))
                elif isinstance(node, (ast.For, ast.AsyncFor)):
                    if self._expr(node.iter, local):
                        local.update(self._targets(node.target))
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    if self._expr(node.context_expr, local):
                        local.update(self._targets(node.optional_vars))
                elif isinstance(node, ast.NamedExpr):
                    if self._expr(node.value, local):
                        local.update(self._targets(node.target))
                elif isinstance(node, ast.Call):      # buf.append(val_chunk) taints buf
                    if isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS and \
                            any(self._expr(a, local) for a in node.args):
                        local.update(self._targets(node.func.value))
            if len(local) == n0:
                break

    def _function(self, body_owner: ast.AST, key: str, params: set[str]) -> bool:
        local = self.tainted.setdefault(key, set())
        before = len(local)
        local |= params
        self._propagate(self._nodes(body_owner, key), local)
        return len(local) != before

    def run(self) -> "Taint":
        fns = self.index.all_functions()
        # phase A: which functions return validation data by themselves (whatever their arguments);
        # a call with tainted arguments is tainted anyway, so returns stay context-free
        for _round in range(6):
            self.tainted = {}
            changed = False
            self._function(self.index.tree, "<module>", set())
            for fi in fns:
                self._function(fi.node, fi.qualname, set())
                rets = self._returns.get(fi.qualname)
                if rets is None:
                    rets = [n for n in self.index.own(fi.node) if isinstance(n, ast.Return) and n.value is not None]
                    self._returns[fi.qualname] = rets
                if fi.qualname not in self.returns and any(self.expr(fi, r.value) for r in rets):
                    self.returns.add(fi.qualname)
                    changed = True
            if not changed:
                break
        # phase B: parameters tainted by their call sites, to a fixed point. A function's taint
        # depends only on its own parameters here (returns are fixed), so after the first round
        # only callers whose locals grew are revisited (a worklist).
        by_key = {fi.qualname: fi for fi in fns}
        dirty: set[str | None] = {None, *by_key}
        for _round in range(8):
            grown: set[str | None] = set()
            for key in dirty:
                fi = by_key.get(key) if key is not None else None
                if key is None:
                    if self._function(self.index.tree, "<module>", set()) or _round == 0:
                        grown.add(None)
                elif self._function(fi.node, fi.qualname, self.params.get(fi.qualname, set())) or _round == 0:
                    grown.add(key)
            dirty = set()
            for key in grown:
                caller = by_key.get(key) if key is not None else None
                ckey = "<module>" if caller is None else caller.qualname
                calls = self._calls.get(ckey)
                if calls is None:
                    body = self.index.tree if caller is None else caller.node
                    calls = [n for n in self.index.own(body) if isinstance(n, ast.Call) and self.index.resolve_call(n)]
                    self._calls[ckey] = calls
                for call in calls:
                    for callee in self.index.resolve_call(call):
                        offset = 1 if callee.cls and isinstance(call.func, ast.Attribute) else 0
                        if callee.name == "__init__":
                            offset = 1
                        got = self.params.setdefault(callee.qualname, set())
                        n0 = len(got)
                        for i, a in enumerate(call.args):
                            j = i + offset
                            if j < len(callee.params) and self.expr(caller, a):
                                got.add(callee.params[j])
                        for kw in call.keywords:
                            if kw.arg and kw.arg in callee.params and self.expr(caller, kw.value):
                                got.add(kw.arg)
                        if len(got) != n0:
                            dirty.add(callee.qualname)
            if not dirty:
                break
        return self


# comprehensions are not here: their targets are scoped to the comprehension (see `_expr`)
_FLOW_NODES = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor,
               ast.withitem, ast.NamedExpr, ast.Call)
_MUTATORS = {"append", "extend", "insert", "add", "update", "copy_", "put", "appendleft"}

_CACHE: dict[tuple[int, str], Taint] = {}


def val_taint(index: ModuleIndex, switches=None) -> Taint:
    """Validation taint of one script; assignments the switches turn off do not propagate."""
    key = (id(index), "val", tuple(sorted(switches.config.items())) if switches is not None else None)
    hit = _CACHE.get(key)
    if hit is None or hit.index is not index:
        if len(_CACHE) > 16:
            _CACHE.clear()
        skip = None
        if switches is not None:
            def skip(node: ast.AST) -> bool:
                return isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For)) and \
                    switches.off_guard(node) is not None
        hit = Taint(index, is_val_name, is_val_string, skip).run()
        _CACHE[key] = hit
    return hit
