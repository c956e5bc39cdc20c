"""Helpers shared by rule modules: building results and evidence."""
from __future__ import annotations

from types import ModuleType
from typing import Any

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
