"""Helpers shared by rule modules: building results and evidence."""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

from ..model import Evidence, RuleResult


def result(rule: ModuleType | Any, outcome: str, message: str, *, measured=None, limit=None,
           evidence: list[Evidence] | None = None, basis: str = "claimed") -> RuleResult:
    return RuleResult(id=rule.ID, code=rule.CODE, title=rule.TITLE, outcome=outcome,  # type: ignore[arg-type]
                      message=message, measured=measured, limit=limit,
                      evidence=list(evidence or []), basis=basis)


def code_ev(file: str, line: int | None, text: str) -> Evidence:
    return Evidence(source="code", file=file, line=line, text=text.strip()[:300])


def log_ev(file: str, line: int | None, text: str) -> Evidence:
    return Evidence(source="log", file=file, line=line, text=text.strip()[:300])


def json_ev(file: str | None, text: str) -> Evidence:
    return Evidence(source="json", file=file, line=None, text=text[:300])


def safe_check(rule: ModuleType | Any, fn: Callable[[Any], RuleResult], ctx: Any,
               message: str = "the analysis could not finish ({error})") -> RuleResult:
    """`fn(ctx)`, or needs_review naming the exception: a rule never raises on odd input.
    Shared by the code rules' `check()` so the wrapper is written once."""
    try:
        return fn(ctx)
    except Exception as e:  # noqa: BLE001 - a rule never raises
        return result(rule, "needs_review", message.format(error=type(e).__name__))
