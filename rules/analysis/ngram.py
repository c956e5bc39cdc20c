"""Eval-time lookup tables: which index expressions combine the token being predicted with its
context (a joint hashed key), which tables are read vs only updated, and which values are
"target-like" (the realized token at the scored position).

The scored position is recognised from how an array is indexed around a loop variable: when a
function reads `tok[j - 1]`, `tok[j - k]` or `tok[j - n:j]` (context) and also `tok[j]`, the
largest offset is the token being predicted. Names such as `y`, `tgt`, `target(s)`, `next_tok`
are target-like too, and so is any local assigned from a target-like value.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .index import FunctionInfo, dotted, walk_own

TARGET_NAMES = {"y", "tgt", "tgts", "target", "targets", "next_tok", "next_token", "nxt", "gold",
                "label", "labels", "y_t", "yt", "tok_next", "true_tok", "cur_tgt", "y_tok", "target_tok",
                "target_id", "target_ids", "tgt_tok", "tgt_np", "y_np", "gold_tok"}
CONTEXT_HINT = re.compile(r"(ctx|context|prev|hist|hash|h\d*$|^h_|prefix|state|key)", re.I)
COMBINE_OPS = (ast.BitXor, ast.Mult, ast.Add, ast.LShift, ast.BitOr)
COMBINE_CALLS = {"bitwise_xor", "bitwise_or", "add", "multiply", "left_shift", "hash", "hash_combine"}
HASH_HELPER = re.compile(r"hash", re.I)
UPDATE_METHODS = {"add_", "index_add_", "scatter_add_", "update", "increment", "put_"}


def _offset(idx: ast.AST) -> tuple[str, int] | None:
    """`j` -> (j, 0); `j + 2` -> (j, 2); `j - 1` -> (j, -1)."""
    if isinstance(idx, ast.Name):
        return idx.id, 0
    if isinstance(idx, ast.BinOp) and isinstance(idx.left, ast.Name) and isinstance(idx.op, (ast.Add, ast.Sub)):
        if isinstance(idx.right, ast.Constant) and isinstance(idx.right.value, int):
            k = idx.right.value
            return idx.left.id, k if isinstance(idx.op, ast.Add) else -k
        return idx.left.id, 1 if isinstance(idx.op, ast.Add) else -1   # j - k: some context offset
    return None


@dataclass
class FunctionTables:
    fi: FunctionInfo
    defs: dict[str, list[ast.expr]] = field(default_factory=dict)      # local -> assigned values
    elem_defs: dict[str, list[ast.expr]] = field(default_factory=dict)  # local -> values stored into its elements
    max_offset: dict[tuple[str, str], int] = field(default_factory=dict)   # (array, var) -> max offset
    has_context: set[tuple[str, str]] = field(default_factory=set)      # (array, var) read below max

    def closure(self, expr: ast.AST, depth: int = 4, elements: bool = False) -> list[ast.AST]:
        """`expr` and the values its names were assigned from, `depth` levels deep; with
        `elements`, element stores count too (`best_p[idx] = p_ng[ok]` defines `best_p`)."""
        out = [expr]
        seen: set[str] = set()
        frontier = [expr]
        for _ in range(depth):
            nxt = []
            for e in frontier:
                for n in ast.walk(e):
                    if isinstance(n, ast.Name) and n.id not in seen and (n.id in self.defs or
                                                                         elements and n.id in self.elem_defs):
                        seen.add(n.id)
                        nxt += self.defs.get(n.id, []) + (self.elem_defs.get(n.id, []) if elements else [])
            out += nxt
            frontier = nxt
            if not frontier:
                break
        return out

    def is_target(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id.lower() in TARGET_NAMES
        if isinstance(node, ast.Subscript):
            base = dotted(node.value)
            idx = node.slice
            if isinstance(idx, ast.Tuple) and idx.elts:
                idx = idx.elts[-1]
            off = _offset(idx) if not isinstance(idx, ast.Slice) else None
            if base and off is not None:
                key = (base, off[0])
                return key in self.has_context and off[1] == self.max_offset.get(key) and off[1] >= 0
            if isinstance(node.value, ast.Name) and node.value.id.lower() in TARGET_NAMES:
                return True
        return False

    def target_terms(self, expr: ast.AST) -> list[ast.AST]:
        out = []
        for e in self.closure(expr):
            for n in ast.walk(e):
                if self.is_target(n):
                    out.append(n)
        return out

    def combines_target(self, idx: ast.AST) -> ast.AST | None:
        """The target term when `idx` mixes the target with other data arithmetically
        (`ctx ^ (tgt * P)`, `np.bitwise_xor(ctx, tgt * P)`, `prev * V + tgt`)."""
        for e in self.closure(idx):
            for n in ast.walk(e):
                sides = None
                if isinstance(n, ast.BinOp) and isinstance(n.op, COMBINE_OPS):
                    sides = (n.left, n.right)
                elif isinstance(n, ast.Call) and dotted(n.func).split(".")[-1] in COMBINE_CALLS and len(n.args) >= 2:
                    sides = (n.args[0], n.args[1])
                elif isinstance(n, ast.Call) and HASH_HELPER.search(dotted(n.func).split(".")[-1]) and len(n.args) >= 2:
                    # a hash helper given the target among its arguments (`_batch_hash_full(tokens,
                    # pos, targets, n, mask)`): the key it returns mixes the target with the rest
                    args = [*n.args, *(k.value for k in n.keywords)]
                    tgt_args = [a for a in args if any(self.is_target(t) or self._named_target(t) for t in ast.walk(a))]
                    others = [a for a in args if a not in tgt_args and not isinstance(a, ast.Constant)]
                    if tgt_args and others:
                        sides = (ast.Tuple(elts=tgt_args, ctx=ast.Load()), ast.Tuple(elts=others, ctx=ast.Load()))
                if sides is not None:
                    lt = [t for t in ast.walk(sides[0]) if self.is_target(t) or self._named_target(t)]
                    rt = [t for t in ast.walk(sides[1]) if self.is_target(t) or self._named_target(t)]
                    if bool(lt) != bool(rt):     # the target on one side, something else on the other
                        other = sides[1] if lt else sides[0]
                        if not (isinstance(other, ast.Constant) and isinstance(other.value, int) and other.value < 4):
                            return (lt or rt)[0]
        return None

    def _named_target(self, n: ast.AST) -> bool:
        """A local assigned (only) from target-like values, e.g. `tgt_np = val_np[jv]`."""
        if isinstance(n, ast.Name) and n.id in self.defs:
            vals = self.defs[n.id]
            return bool(vals) and all(any(self.is_target(x) for x in ast.walk(v)) for v in vals)
        return False


def tables_of(fi: FunctionInfo) -> FunctionTables:
    ft = FunctionTables(fi)
    offsets: dict[tuple[str, str], set[int]] = {}
    slices_below: set[tuple[str, str]] = set()
    for n in walk_own(fi.node):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                for name in _names(t):
                    ft.defs.setdefault(name, []).append(n.value)
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                    ft.elem_defs.setdefault(t.value.id, []).append(n.value)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            ft.defs.setdefault(n.target.id, []).append(n.value)
        elif isinstance(n, ast.Subscript):
            base = dotted(n.value)
            if not base:
                continue
            idx = n.slice
            if isinstance(idx, ast.Tuple) and idx.elts:
                idx = idx.elts[-1]
            if isinstance(idx, ast.Slice):
                up = _offset(idx.upper) if idx.upper is not None else None
                if up is not None:
                    slices_below.add((base, up[0]))
                    offsets.setdefault((base, up[0]), set()).add(up[1] - 1)
                continue
            off = _offset(idx)
            if off is not None:
                offsets.setdefault((base, off[0]), set()).add(off[1])
    for key, offs in offsets.items():
        ft.max_offset[key] = max(offs)
        if len(offs) > 1 or key in slices_below:
            ft.has_context.add(key)
    return ft


def _names(t: ast.AST) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [x for e in t.elts for x in _names(e)]
    return []


def table_reads(fi: FunctionInfo, index) -> list[ast.Subscript]:
    """Subscript loads that are not the target of a store / augmented assignment / add.at."""
    out = []
    for n in walk_own(fi.node):
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load):
            parent = index.parent(n)
            if isinstance(parent, ast.AugAssign) and parent.target is n:
                continue
            if isinstance(parent, ast.Call) and parent.args and parent.args[0] is n and \
                    dotted(parent.func).endswith(("add.at", "maximum.at")):
                continue
            out.append(n)
    return out


def is_update_target(sub: ast.Subscript, index) -> bool:
    parent = index.parent(sub)
    return isinstance(parent, ast.AugAssign) and parent.target is sub
