"""A module index over one decoded training script: functions, classes, call sites, loops,
no-grad regions and the `if` guards around every statement.

Built once per source text (see `get_index`) and shared by every code rule, so a 100 KB script is
parsed and walked once per audit.
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from typing import Iterator

NO_GRAD_CALLS = {"no_grad", "inference_mode"}


def dotted(node: ast.AST | None) -> str:
    """`torch.nn.functional.cross_entropy` for an Attribute/Name chain, '' otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        inner = dotted(node.func)
        if inner:
            parts.append(inner + "()")
    else:
        return ""
    return ".".join(reversed(parts))


def table_base(node: ast.AST | None) -> str:
    """The dotted name of the table a subscript reads: `full_tables[n][key]` -> `full_tables`.

    Per-order table dicts/lists (`ctx_tables[n]`, `self.full_tables[n]`) are the usual shape of
    n-gram caches, so nested subscripts are peeled before naming the base."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return dotted(node)


def call_name(call: ast.Call) -> str:
    """The last name of what is called: `foo` for foo(), `step` for opt.step()."""
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def is_no_grad_with(node: ast.AST) -> bool:
    if not isinstance(node, (ast.With, ast.AsyncWith)):
        return False
    for item in node.items:
        e = item.context_expr
        if isinstance(e, ast.Call) and call_name(e) in NO_GRAD_CALLS:
            return True
    return False


def has_no_grad_decorator(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in NO_GRAD_CALLS:
            return True
    return False


@dataclass
class Guard:
    """An `if` test around a statement; `positive` is False for the else branch and for
    statements after an early `if test: return`."""
    test: ast.expr
    positive: bool
    line: int


@dataclass
class FunctionInfo:
    name: str                      # simple name
    qualname: str                  # Class.method or outer.inner
    node: ast.FunctionDef | ast.AsyncFunctionDef
    cls: str | None
    params: list[str]
    no_grad: bool                  # decorated with torch.no_grad()/inference_mode()
    calls: list[ast.Call] = field(default_factory=list)   # call sites in its own body (not nested defs)

    @property
    def line(self) -> int:
        return self.node.lineno


@dataclass
class ModuleIndex:
    tree: ast.Module
    lines: list[str]
    functions: dict[str, list[FunctionInfo]]          # simple name -> definitions
    by_qualname: dict[str, FunctionInfo]
    classes: dict[str, ast.ClassDef]
    parents: dict[int, ast.AST]                        # id(node) -> parent
    owner: dict[int, FunctionInfo | None]              # id(node) -> enclosing function
    imports: dict[str, str]                            # local name -> dotted module/object
    _guards: dict[int, list[Guard]] = field(default_factory=dict)
    _own: dict[int, list[ast.AST]] = field(default_factory=dict)

    def own(self, node: ast.AST) -> list[ast.AST]:
        """walk_own(node) as a cached list (function bodies are walked by many rules)."""
        hit = self._own.get(id(node))
        if hit is None:
            hit = self._own[id(node)] = list(walk_own(node))
        return hit

    # -- text --------------------------------------------------------------------------------
    def line_text(self, lineno: int | None) -> str:
        if not lineno or lineno < 1 or lineno > len(self.lines):
            return ""
        return self.lines[lineno - 1].strip()

    # -- structure ---------------------------------------------------------------------------
    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(id(node))

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        p = self.parent(node)
        while p is not None:
            yield p
            p = self.parent(p)

    def function_of(self, node: ast.AST) -> FunctionInfo | None:
        return self.owner.get(id(node))

    def enclosing_loops(self, node: ast.AST) -> list[ast.For | ast.While]:
        """Loops around `node` inside its own function, innermost first."""
        out: list[ast.For | ast.While] = []
        for a in self.ancestors(node):
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                break
            if isinstance(a, (ast.For, ast.While, ast.AsyncFor)):
                out.append(a)  # type: ignore[arg-type]
        return out

    def in_no_grad(self, node: ast.AST) -> bool:
        for a in self.ancestors(node):
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return has_no_grad_decorator(a)
            if is_no_grad_with(a):
                return True
        return False

    def guards(self, node: ast.AST) -> list[Guard]:
        """The if-tests (and early-exit tests) that must hold for `node` to run, within its
        function (or module level). Cached per node."""
        hit = self._guards.get(id(node))
        if hit is None:
            hit = self._guards[id(node)] = self._compute_guards(node)
        return hit

    def _compute_guards(self, node: ast.AST) -> list[Guard]:
        out: list[Guard] = []
        child = node
        for a in self.ancestors(node):
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for s in a.body:          # `if not X: return` at the top of the function
                    if s is child:
                        break
                    if (isinstance(s, ast.If) and not s.orelse and s.body
                            and isinstance(s.body[-1], (ast.Return, ast.Raise))):
                        out.append(Guard(s.test, False, s.lineno))
                break
            if isinstance(a, (ast.Lambda, ast.ClassDef)):
                break
            if isinstance(a, ast.If):
                if any(child is s for s in a.body):
                    out.append(Guard(a.test, True, a.lineno))
                elif any(child is s for s in a.orelse):
                    out.append(Guard(a.test, False, a.lineno))
            # early exits before `child` in the same block: `if X: return` => later code needs not X
            for block in _blocks(a):
                if any(child is s for s in block):
                    for s in block:
                        if s is child:
                            break
                        if (isinstance(s, ast.If) and not s.orelse and s.body
                                and isinstance(s.body[-1], (ast.Return, ast.Raise, ast.Continue))):
                            out.append(Guard(s.test, False, s.lineno))
            child = a
        return out

    # -- functions ---------------------------------------------------------------------------
    def all_functions(self) -> list[FunctionInfo]:
        return list(self.by_qualname.values())

    def resolve_call(self, call: ast.Call, with_fn_args: bool = False) -> list[FunctionInfo]:
        """Functions a call may reach, by name (methods by attribute name); with `with_fn_args`,
        also functions passed to it by name (`timed_eval("ttt", eval_val_ttt, ...)`)."""
        out = self._resolve(call)
        if with_fn_args:
            for a in [*call.args, *(k.value for k in call.keywords)]:
                if isinstance(a, ast.Name) and a.id in self.functions:
                    out = out + [fi for fi in self.functions[a.id] if fi not in out]
        return out

    def exclusive(self, a: ast.AST, b: ast.AST) -> bool:
        """True when `a` and `b` sit in different branches of one if/elif chain."""
        anc_a = {id(x): x for x in self.ancestors(a)}
        child = b
        for x in self.ancestors(b):
            if id(x) in anc_a and isinstance(x, ast.If):
                in_body_b = any(child is s for s in x.body)
                ca = a
                for y in self.ancestors(a):
                    if y is x:
                        break
                    ca = y
                in_body_a = any(ca is s for s in x.body)
                return in_body_a != in_body_b
            child = x
        return False

    def _resolve(self, call: ast.Call) -> list[FunctionInfo]:
        f = call.func
        if isinstance(f, ast.Name):
            return [fi for fi in self.functions.get(f.id, []) if fi.cls is None] or \
                   [fi for fi in self.functions.get("__init__", []) if fi.cls == f.id]
        if isinstance(f, ast.Attribute):
            if f.attr.startswith("__") or (isinstance(f.value, ast.Call) and getattr(f.value.func, "id", "") == "super"):
                return []            # super().__init__() and dunders: not a call into our code by name
            cands = self.functions.get(f.attr, [])
            # `module.func()` where module is an import is not ours
            if isinstance(f.value, ast.Name) and f.value.id in self.imports and \
                    f.value.id not in self.classes:
                return []
            return cands
        return []


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    out = []
    for name in ("body", "orelse", "finalbody"):
        b = getattr(node, name, None)
        if isinstance(b, list) and b and isinstance(b[0], ast.stmt):
            out.append(b)
    if isinstance(node, ast.Try):
        for h in node.handlers:
            out.append(h.body)
    return out


def _build(text: str) -> ModuleIndex:
    tree = ast.parse(text)
    parents: dict[int, ast.AST] = {}
    owner: dict[int, FunctionInfo | None] = {}
    functions: dict[str, list[FunctionInfo]] = {}
    by_qual: dict[str, FunctionInfo] = {}
    classes: dict[str, ast.ClassDef] = {}
    imports: dict[str, str] = {}

    def visit(node: ast.AST, fn: FunctionInfo | None, prefix: str, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
            owner[id(child)] = fn
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                params = [a.arg for a in child.args.posonlyargs + child.args.args + child.args.kwonlyargs]
                if child.args.vararg:
                    params.append(child.args.vararg.arg)
                if child.args.kwarg:
                    params.append(child.args.kwarg.arg)
                info = FunctionInfo(child.name, qual, child, cls, params, has_no_grad_decorator(child))
                functions.setdefault(child.name, []).append(info)
                by_qual.setdefault(qual, info)
                visit(child, info, qual + ".", None)
            elif isinstance(child, ast.ClassDef):
                classes.setdefault(child.name, child)
                visit(child, fn, f"{prefix}{child.name}.", child.name)
            else:
                if isinstance(child, ast.Call) and fn is not None:
                    fn.calls.append(child)
                elif isinstance(child, ast.Import):
                    for a in child.names:
                        imports[(a.asname or a.name).split(".")[0]] = a.name
                elif isinstance(child, ast.ImportFrom):
                    for a in child.names:
                        imports[a.asname or a.name] = f"{child.module or ''}.{a.name}"
                visit(child, fn, prefix, cls)

    visit(tree, None, "", None)
    return ModuleIndex(tree=tree, lines=text.splitlines(), functions=functions, by_qualname=by_qual,
                       classes=classes, parents=parents, owner=owner, imports=imports)


class ParseFailure(Exception):
    """The source does not parse; `sentence` says where."""

    def __init__(self, sentence: str):
        super().__init__(sentence)
        self.sentence = sentence


_CACHE: dict[str, ModuleIndex | ParseFailure] = {}
_CACHE_MAX = 8   # an AST of a 100 KB script is large; one audit needs one or two


def get_index(text: str) -> ModuleIndex:
    """The index of `text`, cached by content hash. Raises ParseFailure on a syntax error."""
    key = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
    hit = _CACHE.get(key)
    if hit is None:
        try:
            hit = _build(text)
        except SyntaxError as e:
            hit = ParseFailure(f"the script does not parse ({e.msg} at line {e.lineno})")
        except (ValueError, RecursionError, MemoryError) as e:
            hit = ParseFailure(f"the script could not be analysed ({type(e).__name__})")
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = hit
    if isinstance(hit, ParseFailure):
        raise hit
    return hit


def walk_own(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk that does not descend into nested function/class definitions."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(n))


def names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def position(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
