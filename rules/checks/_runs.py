"""Merging reproduction-run evidence (issue 5) into a rule's static result.

Rules that can be decided from runs/traces call `merge(rule_module, ctx, static_result)` last.
Without runs this returns the static result unchanged.
"""
from __future__ import annotations

from types import ModuleType

from ..context import AuditContext
from ..model import RuleResult


def merge(rule: ModuleType, ctx: AuditContext, static: RuleResult) -> RuleResult:
    if not ctx.runs:
        return static
    return static
