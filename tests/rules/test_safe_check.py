"""The shared never-raise wrapper of the code rules (rules.checks._base.safe_check)."""
from __future__ import annotations

import importlib

import pytest

from rules.checks._base import safe_check

WRAPPED = ["calibration_within_budget", "ngram_target_in_key", "two_pass_rescore", "gptq_on_validation",
           "normalized_distribution", "byte_accounting", "validation_in_training", "network_access",
           "ttt_score_first"]


@pytest.mark.parametrize("name", WRAPPED)
def test_a_crashing_analysis_becomes_needs_review(name, monkeypatch):
    mod = importlib.import_module(f"rules.checks.{name}")

    def boom(ctx):
        raise KeyError("x")

    monkeypatch.setattr(mod, "_check", boom)
    from rules.checks import _runs
    monkeypatch.setattr(_runs, "merge", lambda rule, ctx, static: static)
    res = mod.check(object())
    assert res.outcome == "needs_review" and "KeyError" in res.message and res.code == mod.CODE


def test_safe_check_passes_results_through_and_formats_its_message():
    import rules.checks.two_pass_rescore as mod
    ok = safe_check(mod, lambda ctx: "done", None)
    assert ok == "done"
    bad = safe_check(mod, lambda ctx: 1 / 0, None, "custom ({error}) text")
    assert bad.message == "custom (ZeroDivisionError) text"
