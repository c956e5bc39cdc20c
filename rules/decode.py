"""Decode self-extracting training scripts by parsing them, never by running them.

Since PR #1394 many records ship `train_gpt.py` as a two-line stub such as
``exec(lzma.decompress(base64.b85decode("...")))`` (rules.md Rule 1). The code rules must read
the real source, so this module evaluates *only* a tiny whitelisted expression language over
the stub's AST: string/bytes literals and their concatenation, names bound by simple module-level
assignments, and calls to known pure decoders (base64/binascii/codecs decoders, lzma/zlib/gzip/
bz2 decompressors, ``bytes.decode``, ``str.encode``, ``compile(src, name, 'exec')``), reached
through any import alias (``import lzma as L``, ``from base64 import b85decode as d``,
``__import__('lzma')``, ``importlib.import_module('zlib')``). Nothing else is ever called, so a
payload cannot run; the decoded text is itself checked again for a wrapper (nested layers).

Guards: decompressed output is capped (`MAX_DECODED_BYTES`) while streaming, and nesting is
capped (`MAX_DEPTH`). Anything unrecognised returns the text unchanged (the code rules then read
the stub), with a note when a wrapper was recognised but its payload could not be decoded.
"""
from __future__ import annotations

import ast
import base64
import binascii
import bz2
import codecs
import lzma
import zlib
from dataclasses import dataclass, field

MAX_DECODED_BYTES = 20 * 1024 * 1024
MAX_DEPTH = 10


@dataclass
class DecodeResult:
    text: str                                   # the real source (or the input, unchanged)
    layers: list[str] = field(default_factory=list)  # e.g. ["b85decode", "lzma"], outermost first
    notes: list[str] = field(default_factory=list)   # one sentence each
    decoded: bool = False


class _Unsupported(Exception):
    """The expression is outside the whitelisted language (not a wrapper we can read)."""


class _BadPayload(Exception):
    """A recognised decoder failed on its input (garbage, truncated, too large)."""


def _cap_check(data: bytes) -> bytes:
    if len(data) > MAX_DECODED_BYTES:
        raise _BadPayload(f"the decoded payload exceeds {MAX_DECODED_BYTES:,} bytes")
    return data


def _as_bytes(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        try:
            return v.encode("ascii")
        except UnicodeEncodeError as exc:
            raise _BadPayload("a decoder got non-ASCII text") from exc
    raise _Unsupported("decoder input is not str/bytes")


def _stream_decompress(obj, data: bytes, what: str) -> bytes:
    try:
        out = obj.decompress(data, MAX_DECODED_BYTES + 1)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as exc:
        raise _BadPayload(f"{what} failed: {exc}") from exc
    out = _cap_check(out)
    if not getattr(obj, "eof", True):
        raise _BadPayload(f"{what} failed: the compressed stream is truncated")
    return out


def _lzma(args: list) -> bytes:
    return _stream_decompress(lzma.LZMADecompressor(), _as_bytes(args[0]), "lzma.decompress")


def _zlib(args: list) -> bytes:
    wbits = args[1] if len(args) > 1 and isinstance(args[1], int) else zlib.MAX_WBITS
    try:
        obj = zlib.decompressobj(wbits)
    except (ValueError, zlib.error) as exc:
        raise _BadPayload(f"zlib.decompress failed: {exc}") from exc
    return _stream_decompress(obj, _as_bytes(args[0]), "zlib.decompress")


def _gzip(args: list) -> bytes:
    return _stream_decompress(zlib.decompressobj(16 + zlib.MAX_WBITS), _as_bytes(args[0]), "gzip.decompress")


def _bz2(args: list) -> bytes:
    return _stream_decompress(bz2.BZ2Decompressor(), _as_bytes(args[0]), "bz2.decompress")


def _b(fn, name):
    def run(args: list) -> bytes:
        try:
            return _cap_check(fn(_as_bytes(args[0])))
        except (binascii.Error, ValueError, TypeError) as exc:
            raise _BadPayload(f"{name} failed: {exc}") from exc
    return run


def _codecs_decode(args: list) -> object:
    if len(args) < 2 or not isinstance(args[1], str):
        # codecs.decode(bytes) defaults to utf-8 text
        enc = "utf-8"
    else:
        enc = args[1].lower().replace("-", "_")
    data = args[0]
    if enc in ("base64", "base_64", "base64_codec"):
        return _b(base64.b64decode, "codecs base64")([data])
    if enc in ("zlib", "zip", "zlib_codec"):
        return _zlib([data])
    if enc in ("bz2", "bz2_codec"):
        return _bz2([data])
    if enc in ("hex", "hex_codec"):
        return _b(binascii.unhexlify, "codecs hex")([data])
    if enc in ("rot13", "rot_13") and isinstance(data, str):
        return codecs.decode(data, "rot13")
    if enc in ("utf_8", "utf8", "ascii", "latin_1", "latin1"):
        return _decode_bytes(data, enc)
    raise _Unsupported(f"codecs.decode with encoding {enc!r}")


def _decode_bytes(data: object, enc: str = "utf-8") -> str:
    if not isinstance(data, bytes):
        raise _Unsupported(".decode() on a non-bytes value")
    try:
        return data.decode(enc.replace("_", "-"))
    except (UnicodeDecodeError, LookupError) as exc:
        raise _BadPayload(f"the payload is not {enc} text: {exc}") from exc


# qualified name -> (layer label, implementation)
_DECODERS = {
    "lzma.decompress": ("lzma", _lzma),
    "zlib.decompress": ("zlib", _zlib),
    "gzip.decompress": ("gzip", _gzip),
    "bz2.decompress": ("bz2", _bz2),
    "base64.b64decode": ("b64decode", _b(base64.b64decode, "b64decode")),
    "base64.standard_b64decode": ("b64decode", _b(base64.standard_b64decode, "b64decode")),
    "base64.urlsafe_b64decode": ("urlsafe_b64decode", _b(base64.urlsafe_b64decode, "urlsafe_b64decode")),
    "base64.decodebytes": ("b64decode", _b(base64.decodebytes, "decodebytes")),
    "base64.b85decode": ("b85decode", _b(base64.b85decode, "b85decode")),
    "base64.a85decode": ("a85decode", _b(base64.a85decode, "a85decode")),
    "base64.b32decode": ("b32decode", _b(base64.b32decode, "b32decode")),
    "base64.b16decode": ("b16decode", _b(base64.b16decode, "b16decode")),
    "binascii.a2b_base64": ("b64decode", _b(binascii.a2b_base64, "a2b_base64")),
    "binascii.unhexlify": ("unhexlify", _b(binascii.unhexlify, "unhexlify")),
    "binascii.a2b_hex": ("unhexlify", _b(binascii.a2b_hex, "a2b_hex")),
    "codecs.decode": ("codecs", _codecs_decode),
}
_MODULES = {"lzma", "zlib", "gzip", "bz2", "base64", "binascii", "codecs", "importlib", "builtins"}
_EXEC_NAMES = {"exec", "eval"}


class _Evaluator:
    """Evaluates the whitelisted expression language over one module's AST."""

    def __init__(self, tree: ast.Module):
        self.aliases: dict[str, str] = {}   # local name -> module or module.function
        self.env: dict[str, object] = {}    # simple module-level assignments
        self.env_nodes: dict[str, ast.expr] = {}
        self.layers: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    root = a.name.split(".")[0]
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        self.aliases[root] = root
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.env_nodes[node.targets[0].id] = node.value

    # -- name resolution -------------------------------------------------------------------
    def qualname(self, node: ast.expr) -> str | None:
        """The qualified name a callee refers to (`lzma.decompress`), or None."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id in ("compile", "exec", "eval", "__import__", "bytes", "str"):
                return node.id
            if node.id in self.env_nodes:
                v = self.env_nodes[node.id]
                if isinstance(v, (ast.Name, ast.Attribute, ast.Call)):
                    return self.qualname(v)
            return None
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            fn = self.qualname(node.func)
            if fn in ("__import__", "importlib.import_module", "builtins.__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value in _MODULES:
                    return arg.value
            return None
        return None

    # -- evaluation --------------------------------------------------------------------------
    def eval(self, node: ast.expr, depth: int = 0) -> object:
        if depth > 200:
            raise _Unsupported("expression too deep")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int)):
            return node.value
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
            return -node.operand.value            # zlib.decompress(data, -15)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in self.env_nodes:
                value = self.eval(self.env_nodes[node.id], depth + 1)
                self.env[node.id] = value
                return value
            raise _Unsupported(f"unknown name {node.id}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.eval(node.left, depth + 1), self.eval(node.right, depth + 1)
            if type(left) is type(right) and isinstance(left, (str, bytes)):
                out = left + right
                if len(out) > MAX_DECODED_BYTES:
                    raise _BadPayload("concatenated literal too large")
                return out
            raise _Unsupported("+ of non-string values")
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise _Unsupported(type(node).__name__)

    def call(self, node: ast.Call, depth: int) -> object:
        if node.keywords and not all(k.arg in ("encoding", "errors", "mode", "wbits") for k in node.keywords):
            raise _Unsupported("call with unsupported keywords")
        func = node.func
        # methods on values: x.decode(...), x.encode(...)
        if isinstance(func, ast.Attribute) and func.attr in ("decode", "encode"):
            qn = self.qualname(func)
            if qn is None or qn not in _DECODERS:
                target = self.eval(func.value, depth + 1)
                enc = "utf-8"
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    enc = node.args[0].value
                if func.attr == "decode":
                    if isinstance(target, bytes):
                        return _decode_bytes(target, enc.lower().replace("-", "_"))
                    raise _Unsupported(".decode() on a non-bytes value")
                if isinstance(target, str):
                    return target.encode("utf-8", errors="strict")
                raise _Unsupported(".encode() on a non-str value")
        qn = self.qualname(func)
        if qn == "compile":
            if len(node.args) >= 1:
                return self.eval(node.args[0], depth + 1)
            raise _Unsupported("compile() without a source")
        if qn in ("bytes", "str") and node.args:
            value = self.eval(node.args[0], depth + 1)
            if qn == "bytes" and isinstance(value, str) and len(node.args) > 1:
                return value.encode("utf-8")
            if qn == "str" and isinstance(value, bytes) and len(node.args) > 1:
                return _decode_bytes(value)
            return value
        if qn in _DECODERS:
            label, impl = _DECODERS[qn]
            args = [self.eval(a, depth + 1) for a in node.args]
            for k in node.keywords:
                if k.arg == "encoding":
                    args.append(self.eval(k.value, depth + 1))
            if not args:
                raise _Unsupported(f"{qn}() without arguments")
            out = impl(args)
            if label == "codecs" and len(args) > 1 and isinstance(args[1], str):
                label = f"codecs:{args[1]}"
            self.layers.append(label)
            return out
        raise _Unsupported(f"call of {qn or ast.unparse(func)[:40]}")


def _find_exec(tree: ast.Module) -> ast.Call | None:
    """The module-level exec/eval call of a wrapper stub, if the module is only a stub."""
    call = None
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)):
            continue
        if isinstance(node, ast.Expr):
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                continue                      # docstring
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in _EXEC_NAMES and v.args:
                if call is not None:
                    return None               # two exec calls: not a simple stub
                call = v
                continue
        return None                           # any other statement: a real script, not a stub
    return call


def _unwrap_once(text: str) -> tuple[str, list[str]] | None:
    """One layer: the decoded payload text and its decoders, or None when `text` is no stub.
    Raises _BadPayload when it is a stub whose payload cannot be decoded."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    call = _find_exec(tree)
    if call is None:
        return None
    ev = _Evaluator(tree)
    try:
        payload = ev.eval(call.args[0])
    except _Unsupported:
        return None
    except RecursionError as exc:
        raise _BadPayload("the payload expression is too deeply nested") from exc
    if isinstance(payload, bytes):
        payload = _decode_bytes(payload)
    if not isinstance(payload, str):
        return None
    if not ev.layers:
        return None       # exec of a plain literal is not a compression wrapper; leave it visible
    return payload, ev.layers


def decode_source(text: str) -> DecodeResult:
    """The real source of a (possibly self-extracting) script, with its wrapper layers."""
    result = DecodeResult(text=text)
    current = text
    for depth in range(MAX_DEPTH + 1):
        try:
            step = _unwrap_once(current)
        except _BadPayload as exc:
            result.notes.append(
                f"A self-extracting wrapper was found but its payload could not be decoded ({exc}); "
                "the stub is read as is."
            )
            break
        if step is None:
            break
        if depth == MAX_DEPTH:
            result.notes.append(f"More than {MAX_DEPTH} nested wrapper layers; decoding stopped there.")
            break
        current, layers = step
        result.layers.extend(layers)
        result.decoded = True
    result.text = current
    return result
