"""Environment-controlled switches: what `os.environ.get("TTT_ENABLED", "0")`, a Hyperparameters
attribute set from it, or an `if args.ttt_enabled:` guard evaluates to under the configuration the
logs show (`ctx.run_config()`), then the README / `.sh` run command's environment
(`rules.analysis.launch`), falling back to the default written in the code. A guard that the
configuration switches off still counts as on when the logs hold a line that only its branch
prints (`ttt:start lr=`): the path ran, whatever its default says.

Values are evaluated by a tiny interpreter over constants, `int/float/bool/str`, comparisons and
boolean operators; anything else is UNKNOWN, and a rule treats an unknown switch as "may run".
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .index import Guard, ModuleIndex, dotted


class _Unknown:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value")


UNKNOWN = _Unknown()


@dataclass
class EnvRead:
    var: str            # TTT_ENABLED
    default: object     # the literal default, or UNKNOWN / None when absent
    line: int
    attr: str | None = None   # the Hyperparameters attribute / variable it is assigned to


@dataclass
class Switches:
    """Env reads of one script and the attribute/variable definitions built from them."""
    index: ModuleIndex
    config: dict[str, str]
    reads: list[EnvRead] = field(default_factory=list)
    attr_defs: dict[str, ast.expr] = field(default_factory=dict)   # class attr / module var -> value expr
    attr_lines: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)   # config key -> where it came from, when not a log
    log_text: str = ""                                       # the submitted logs, for branch-only log lines
    _off: dict[int, tuple[ast.expr, int] | None] = field(default_factory=dict)
    _log_prefixes: dict[str, list[ast.AST]] | None = None

    # -- reading the config -----------------------------------------------------------------
    def config_value(self, *keys: str) -> object:
        for k in keys:
            for cand in (k, k.lower(), k.upper()):
                if cand in self.config:
                    return parse_literal(self.config[cand])
        return UNKNOWN

    def env_value(self, var: str, default: object) -> object:
        v = self.config_value(var.lower(), var)
        if v is not UNKNOWN:
            return v
        return default

    def attr_value(self, attr: str, _depth: int = 0) -> object:
        v = self.config_value(attr)
        if v is not UNKNOWN:
            return v
        expr = self.attr_defs.get(attr)
        if expr is None or _depth > 4:
            return UNKNOWN
        return self.evaluate(expr, _depth + 1)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, node: ast.expr, _depth: int = 0) -> object:
        try:
            return self._eval(node, _depth)
        except Exception:  # noqa: BLE001 - the interpreter is best effort by design
            return UNKNOWN

    def _eval(self, node: ast.expr, depth: int) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            vals = [self._eval(e, depth) for e in node.elts]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        env = env_call(node)
        if env is not None:
            var, default = env
            return self.env_value(var, default)
        if isinstance(node, ast.Attribute):
            if node.attr in self.attr_defs or node.attr in self.config:
                return self.attr_value(node.attr, depth)
            return UNKNOWN
        if isinstance(node, ast.Name):
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            if node.id in self.attr_defs or node.id in self.config:
                return self.attr_value(node.id, depth)
            return UNKNOWN
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, depth)
            if v is UNKNOWN:
                return UNKNOWN
            if isinstance(node.op, ast.Not):
                return not truthy(v)
            if isinstance(node.op, ast.USub):
                return -v  # type: ignore[operator]
            return UNKNOWN
        if isinstance(node, ast.BoolOp):
            vals = [self._eval(v, depth) for v in node.values]
            if isinstance(node.op, ast.And):
                if any(v is not UNKNOWN and not truthy(v) for v in vals):
                    return False
                return UNKNOWN if any(v is UNKNOWN for v in vals) else all(truthy(v) for v in vals)
            if any(v is not UNKNOWN and truthy(v) for v in vals):
                return True
            return UNKNOWN if any(v is UNKNOWN for v in vals) else False
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a = self._eval(node.left, depth)
            b = self._eval(node.comparators[0], depth)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            op = node.ops[0]
            a, b = _coerce_pair(a, b)
            if isinstance(op, ast.Eq):
                return a == b
            if isinstance(op, ast.NotEq):
                return a != b
            if isinstance(op, ast.In):
                return a in b  # type: ignore[operator]
            if isinstance(op, ast.NotIn):
                return a not in b  # type: ignore[operator]
            if isinstance(op, ast.Gt):
                return a > b  # type: ignore[operator]
            if isinstance(op, ast.GtE):
                return a >= b  # type: ignore[operator]
            if isinstance(op, ast.Lt):
                return a < b  # type: ignore[operator]
            if isinstance(op, ast.LtE):
                return a <= b  # type: ignore[operator]
            return UNKNOWN
        if isinstance(node, ast.Call):
            fname = dotted(node.func)
            if fname in ("int", "float", "bool", "str") and len(node.args) == 1:
                v = self._eval(node.args[0], depth)
                if v is UNKNOWN:
                    return UNKNOWN
                if fname == "bool":
                    return truthy(v)
                if fname == "str":
                    return str(v)
                if isinstance(v, str):
                    v = v.strip()
                    if fname == "int" and v.lower() in ("true", "false"):
                        return int(v.lower() == "true")
                return int(float(v)) if fname == "int" else float(v)  # type: ignore[arg-type]
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("lower", "upper", "strip"):
                v = self._eval(node.func.value, depth)
                if isinstance(v, str):
                    return getattr(v, node.func.attr)()
                if isinstance(v, bool):  # config echo "True" parsed to bool; compare as text
                    return getattr(str(v), node.func.attr)()
                return UNKNOWN
            return UNKNOWN
        if isinstance(node, ast.IfExp):
            t = self._eval(node.test, depth)
            if t is UNKNOWN:
                return UNKNOWN
            return self._eval(node.body if truthy(t) else node.orelse, depth)
        if isinstance(node, ast.BinOp):
            a = self._eval(node.left, depth)
            b = self._eval(node.right, depth)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            if isinstance(node.op, ast.Mult):
                return a * b  # type: ignore[operator]
            if isinstance(node.op, ast.Add):
                return a + b  # type: ignore[operator]
            if isinstance(node.op, ast.Sub):
                return a - b  # type: ignore[operator]
            if isinstance(node.op, ast.Div):
                return a / b  # type: ignore[operator]
            return UNKNOWN
        return UNKNOWN

    # -- guards -----------------------------------------------------------------------------
    def guard_state(self, test: ast.expr, positive: bool = True) -> object:
        """True when the guarded code runs, False when it is switched off, UNKNOWN otherwise."""
        v = self.evaluate(test)
        if v is UNKNOWN:
            return UNKNOWN
        return truthy(v) if positive else not truthy(v)

    def off_guard(self, node: ast.AST) -> tuple[ast.expr, int] | None:
        """The first guard around `node` that the config/defaults switch off, with its line."""
        key = id(node)
        if key in self._off:
            return self._off[key]
        found = None
        for g in self.index.guards(node):
            if self.guard_state(g.test, g.positive) is False and not self.echoed_in_logs(g, node):
                found = (g.test, g.line)
                break
        self._off[key] = found
        return found

    # -- log lines only a branch prints ------------------------------------------------------
    def _prefixes(self) -> dict[str, list[ast.AST]]:
        """Constant leading text of every log/print call (`log0(f"ttt:start lr={lr}")` ->
        `ttt:start lr=`), with the calls that print it."""
        if self._log_prefixes is None:
            out: dict[str, list[ast.AST]] = {}
            for n in ast.walk(self.index.tree):
                if isinstance(n, ast.Call) and n.args and LOG_CALL.search(dotted(n.func).split(".")[-1] or ""):
                    p = _constant_prefix(n.args[0]).strip()
                    if len(p) >= MIN_ECHO_PREFIX and re.search(r"[A-Za-z]{3}", p):
                        out.setdefault(p, []).append(n)
            self._log_prefixes = out
        return self._log_prefixes

    def _region(self, g: Guard, node: ast.AST) -> list[ast.AST]:
        """The statements `g` guards around `node`: the branch of its `if` holding `node`, or
        (an early exit) the rest of the enclosing block; with the functions they call."""
        if_node = self.index.parent(g.test)
        if not isinstance(if_node, ast.If):
            return []
        anc = set(map(id, self.index.ancestors(node))) | {id(node)}
        if any(id(s) in anc for s in if_node.body):
            stmts = list(if_node.body)
        elif any(id(s) in anc for s in if_node.orelse):
            stmts = list(if_node.orelse)
        else:
            parent = self.index.parent(if_node)
            block = next((b for b in _child_blocks(parent) if any(s is if_node for s in b)), [])
            stmts = block[block.index(if_node) + 1:] if if_node in block else []
        out: list[ast.AST] = list(stmts)
        for s in stmts:
            for c in ast.walk(s):
                if isinstance(c, ast.Call):
                    out += [fi.node for fi in self.index.resolve_call(c)]
        return out

    def echoed_in_logs(self, g: Guard, node: ast.AST) -> bool:
        """True when the logs hold a line that only the code `g` guards prints: the path ran,
        whatever its default says."""
        if not self.log_text:
            return False
        prefixes = self._prefixes()
        if not prefixes:
            return False
        region = self._region(g, node)
        inside = {id(x) for r in region for x in ast.walk(r)}
        for p, calls in prefixes.items():
            if all(id(c) in inside for c in calls) and p in self.log_text:
                return True
        return False

    def switch_for(self, node: ast.AST) -> EnvRead | None:
        """The env read behind the first guard around `node` that mentions one, for messages."""
        for g in self.index.guards(node):
            for n in ast.walk(g.test):
                name = n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None)
                for r in self.reads:
                    if name and r.attr == name:
                        return r
                env = env_call(n) if isinstance(n, ast.expr) else None
                if env:
                    return next((r for r in self.reads if r.var == env[0]), None)
        return None

    def explain(self, test: ast.expr) -> str:
        """Why a guard is off: "by the logged configuration (ttt_enabled: False)" or "by its env
        default (TTT_ENABLED=0)"; '' when neither can be named."""
        for n in ast.walk(test):
            name = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else None
            env = env_call(n) if isinstance(n, ast.expr) else None
            if env is not None:
                var, default = env
                got = self.config_value(var.lower(), var)
                if got is not UNKNOWN:
                    src = self.sources.get(var) or self.sources.get(var.lower())
                    if src:
                        return f"by the run command in {src} ({var}={got})"
                    return f"by the logged configuration ({var.lower()}: {got})"
                return f"by its env default ({var}={default})"
            if not name:
                continue
            for cand in (name, name.lower(), name.upper()):
                if cand in self.config:
                    if cand in self.sources:
                        return f"by the run command in {self.sources[cand]} ({cand}={self.config[cand]})"
                    return f"by the logged configuration ({cand}: {self.config[cand]})"
            read = next((r for r in self.reads if r.attr == name), None)
            if read is not None:
                return f"by its env default ({read.var}={read.default})"
        return ""

    def env_reads_matching(self, *fragments: str) -> list[EnvRead]:
        frags = [f.upper() for f in fragments]
        return [r for r in self.reads if any(f in r.var.upper() for f in frags)]

    def read_state(self, read: EnvRead) -> object:
        """The value an env read takes under the run's config (by attribute name or var)."""
        if read.attr:
            v = self.attr_value(read.attr)
            if v is not UNKNOWN:
                return v
        return self.env_value(read.var, read.default)


LOG_CALL = re.compile(r"^(log\w*|print\w*|info|warning|write)$", re.I)
MIN_ECHO_PREFIX = 8


def _constant_prefix(arg: ast.AST) -> str:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        out = ""
        for v in arg.values:
            if not (isinstance(v, ast.Constant) and isinstance(v.value, str)):
                break
            out += v.value
        return out
    return ""


def _child_blocks(node: ast.AST | None) -> list[list[ast.stmt]]:
    return [b for f in ("body", "orelse", "finalbody") if isinstance(b := getattr(node, f, None), list)]


def truthy(v: object) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(v)


def parse_literal(text: str) -> object:
    s = str(text).strip()
    if s in ("True", "true"):
        return True
    if s in ("False", "false"):
        return False
    if s in ("None", ""):
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _coerce_pair(a: object, b: object) -> tuple[object, object]:
    """Config echoes are parsed to bool/int; code compares with strings ('1', 'true')."""
    if isinstance(a, bool) and isinstance(b, str):
        return ("1" if a else "0") if b.strip() in ("0", "1") else str(a).lower(), b.lower()
    if isinstance(b, bool) and isinstance(a, str):
        bb, aa = _coerce_pair(b, a)
        return aa, bb
    if isinstance(a, (int, float)) and isinstance(b, str):
        return str(a), b
    if isinstance(b, (int, float)) and isinstance(a, str):
        return a, str(b)
    return a, b


def env_call(node: ast.AST) -> tuple[str, object] | None:
    """(VAR, default) for os.environ.get / os.getenv / os.environ[...] / environ.get."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        name = dotted(node.func)
        if name.endswith("environ.get") or name.endswith("getenv") or name == "env":
            default: object = None
            if len(node.args) > 1:
                d = node.args[1]
                default = d.value if isinstance(d, ast.Constant) else UNKNOWN
            for kw in node.keywords:
                if kw.arg == "default":
                    default = kw.value.value if isinstance(kw.value, ast.Constant) else UNKNOWN
            return node.args[0].value, default
    if isinstance(node, ast.Subscript) and dotted(node.value).endswith("environ"):
        sl = node.slice
        if isinstance(sl, ast.Constant) and isinstance(sl.value, str):
            return sl.value, None
    return None


_SWITCH_CACHE: dict[tuple[int, tuple], Switches] = {}


def switches(index: ModuleIndex, config: dict[str, str] | None, sources: dict[str, str] | None = None,
             log_text: str = "") -> Switches:
    """The Switches of one index under one configuration (cached). `sources` names where config
    keys that did not come from the logs' echo were read (a README run command); `log_text` is the
    logs' text, so a branch whose own log lines appear counts as on."""
    cfg = dict(config or {})
    key = (id(index), tuple(sorted(cfg.items())), tuple(sorted((sources or {}).items())), hash(log_text))
    hit = _SWITCH_CACHE.get(key)
    if hit is not None and hit.index is index:
        return hit
    sw = Switches(index=index, config=cfg, sources=dict(sources or {}), log_text=log_text)
    for node in ast.walk(index.tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if value is None:
                continue
            for t in targets:
                name = t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", None)
                if not name:
                    continue
                fn = index.function_of(node)
                # class attributes, module variables and `self.x = ...` in __init__
                if fn is None or (isinstance(t, ast.Attribute) and fn.name == "__init__") or \
                        any(env_call(n) for n in ast.walk(value)):
                    sw.attr_defs.setdefault(name, value)
                    sw.attr_lines.setdefault(name, node.lineno)
        env = env_call(node)
        if env is not None:
            attr = None
            for a in index.ancestors(node):
                if isinstance(a, (ast.Assign, ast.AnnAssign)):
                    t = a.targets[0] if isinstance(a, ast.Assign) else a.target
                    attr = t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", None)
                    break
                if isinstance(a, ast.stmt):
                    break
            sw.reads.append(EnvRead(env[0], env[1], getattr(node, "lineno", 0), attr))
    if len(_SWITCH_CACHE) > 16:
        _SWITCH_CACHE.clear()
    _SWITCH_CACHE[key] = sw
    return sw
