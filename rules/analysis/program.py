"""One analysed training script: index, env switches, validation taint, main flow and TTT shape,
built once per (script text, logged configuration) and shared by every code rule."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..context import AuditContext, SourceFile
from ..model import Evidence, RuleResult
from .env import Switches, switches
from .flow import Flow, build_flow
from .index import ModuleIndex, ParseFailure, get_index
from .launch import ctx_launch_evidence
from .taint import Taint, val_taint
from .ttt import TTTAnalysis


@dataclass
class Program:
    source: SourceFile
    index: ModuleIndex
    switches: Switches
    taint: Taint
    flow: Flow
    ttt: TTTAnalysis

    @property
    def file(self) -> str:
        return self.source.path

    def evidence(self, node_or_line: ast.AST | int | None, note: str | None = None) -> Evidence:
        """Code evidence for a node/line: exactly the (stripped) source line, so a reader can find
        it; `note` (what the line does) is used only when there is no line to quote — the rule's
        message carries the explanation."""
        line = node_or_line if isinstance(node_or_line, int) or node_or_line is None else \
            getattr(node_or_line, "lineno", None)
        text = self.index.line_text(line) or (note or "")
        return Evidence(source="code", file=self.file, line=line, text=text[:300])

    def line(self, node: ast.AST | int | None) -> str:
        line = node if isinstance(node, int) or node is None else getattr(node, "lineno", None)
        return self.index.line_text(line)


_CACHE: dict[tuple[str, int, tuple], Program] = {}


def _build(src: SourceFile, config: dict[str, str], sources: dict[str, str] | None = None,
           log_text: str = "") -> Program:
    index = get_index(src.text)
    key = (src.path, id(index), tuple(sorted(config.items())), tuple(sorted((sources or {}).items())), hash(log_text))
    hit = _CACHE.get(key)
    if hit is not None and hit.index is index:
        return hit
    sw = switches(index, config, sources, log_text)
    taint = val_taint(index, sw)
    flow = build_flow(index, sw, taint)
    prog = Program(src, index, sw, taint, flow, TTTAnalysis(index, taint, sw))
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = prog
    return prog


def program_for(rule: ModuleType | Any, ctx: AuditContext) -> tuple[Program | None, RuleResult | None]:
    """(program, None) for a submission with a parseable training script; otherwise
    (None, the rule's not_applicable / needs_review result)."""
    def res(outcome: str, message: str, ev: list[Evidence] | None = None) -> RuleResult:
        return RuleResult(id=rule.ID, code=rule.CODE, title=rule.TITLE, outcome=outcome,  # type: ignore[arg-type]
                          message=message, evidence=list(ev or []))

    try:
        src = ctx.submission.train_script
    except Exception:  # noqa: BLE001 - a malformed submission object is a review case, not a crash
        src = None
    if src is None:
        return None, res("not_applicable", "no training script in the submission")
    if src.syntax_error:
        return None, res("needs_review", f"{src.path} could not be analysed: {src.syntax_error}",
                         [Evidence(source="code", file=src.path, line=None, text=src.syntax_error[:300])])
    if not (src.text or "").strip():
        return None, res("needs_review", f"{src.path} is empty or could not be decoded")
    try:
        config = ctx.run_config()
    except Exception:  # noqa: BLE001
        config = {}
    config, sources, log_text = with_launch_config(ctx, config)
    try:
        return _build(src, config, sources, log_text), None
    except ParseFailure as e:
        return None, res("needs_review", f"{src.path}: {e.sentence}",
                         [Evidence(source="code", file=src.path, line=None, text=e.sentence)])
    except RecursionError:
        return None, res("needs_review", f"{src.path} is too deeply nested to analyse")


def with_launch_config(ctx: AuditContext, config: dict[str, str]) -> tuple[dict[str, str], dict[str, str], str]:
    """The logs' configuration, then (for keys the logs do not echo) the README / .sh run
    command's environment; with where each added key came from and the logs' text."""
    try:
        launch = ctx_launch_evidence(ctx)
    except Exception:  # noqa: BLE001 - configuration evidence is best effort
        return config, {}, ""
    merged = dict(config)
    seen = {k.lower() for k in config}
    sources: dict[str, str] = {}
    for var, value in launch.env.items():
        if var.lower() not in seen:
            merged[var] = value
            sources[var] = launch.where.get(var, "the run command")
    return merged, sources, launch.log_text


def other_sources(ctx: AuditContext) -> list[SourceFile]:
    """Every .py of the submission except the training script."""
    main = ctx.submission.train_script
    return [s for s in ctx.submission.sources if main is None or s.path != main.path]
