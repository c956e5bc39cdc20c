"""Every rule's must-fire and must-not-fire fixtures (rules/checks/fixtures/<module>/{fire,pass}/<case>/).

Each case is a small records folder plus `expect.json`:
  {"outcome": "fail" | ["fail", "needs_review"], "evidence_contains": "text in some evidence",
   "policy": "readme-2026-03" (optional), "message_contains": "..." (optional)}
`fire` cases must produce one of the listed outcomes; `pass` cases default to pass/not_applicable.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rules.checks import RULE_MODULES, load_rules

FIXTURES = Path(__file__).resolve().parents[2] / "rules" / "checks" / "fixtures"


def _cases():
    for module in RULE_MODULES:
        for kind in ("fire", "pass"):
            d = FIXTURES / module / kind
            if not d.is_dir():
                continue
            for case in sorted(p for p in d.iterdir() if p.is_dir()):
                yield pytest.param(module, kind, case, id=f"{module}-{kind}-{case.name}")


def test_every_rule_has_fire_and_pass_fixtures():
    missing = [f"{m}/{k}" for m in RULE_MODULES for k in ("fire", "pass")
               if not any((FIXTURES / m / k).glob("*/expect.json"))]
    assert not missing, f"rules without fixtures: {missing}"


def test_rule_modules_are_documented():
    for mod in load_rules():
        assert mod.__doc__ and len(mod.__doc__.strip()) > 80, mod.__name__
        assert mod.ID and mod.CODE.startswith("PG") and mod.TITLE


@pytest.mark.parametrize("module,kind,case", list(_cases()))
def test_fixture(module: str, kind: str, case: Path):
    from rules.engine import context_for

    expect = json.loads((case / "expect.json").read_text())
    mod = next(m for m in load_rules() if m.__name__.rsplit(".", 1)[1] == module)
    ctx = context_for(case, policy=expect.get("policy"))
    res = mod.check(ctx)
    want = expect.get("outcome", "fail" if kind == "fire" else ["pass", "not_applicable"])
    want = [want] if isinstance(want, str) else want
    assert res.outcome in want, f"{case}: got {res.outcome}: {res.message}"
    assert res.message
    if "evidence_contains" in expect:
        texts = [e.text for e in res.evidence]
        assert any(expect["evidence_contains"] in t for t in texts), texts
    if "message_contains" in expect:
        assert expect["message_contains"] in res.message, res.message
