"""Every rule's must-fire and must-not-fire fixtures (rules/checks/fixtures/<module>/{fire,pass}/<case>/).

Each case is a small records folder plus `expect.json` (a case whose script is a variant of a
shared base holds `variant.json` instead of `train_gpt.py`; see tests/rules/fixture_cases.py):
  {"outcome": "fail" | ["fail", "needs_review"], "evidence_contains": "text in some evidence",
   "policy": "readme-2026-03" (optional), "message_contains": "..." (optional)}
`fire` cases must produce one of the listed outcomes; `pass` cases default to pass/not_applicable.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rules.checks import RULE_MODULES, load_rules
from tests.rules.fixture_cases import BASES, VariantError, apply_edits, materialize_case

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


def test_variant_edits_apply_in_order_and_each_must_match_once():
    assert apply_edits("a = 1\nb = 2\n", [["a = 1", "a = 3"], ["a = 3\nb", "a = 3\nc"]]) == "a = 3\nc = 2\n"
    for missing_or_repeated in ([["z", "y"]], [["x", "y"]], [["", "y"]]):
        with pytest.raises(VariantError, match="exactly once"):
            apply_edits("x = x\n", missing_or_repeated)
    with pytest.raises(VariantError, match="pair of strings"):
        apply_edits("x\n", [["x"]])


def test_materialized_case_holds_the_script_and_not_the_variant(tmp_path):
    src = tmp_path / "src" / "some_case"
    src.mkdir(parents=True)
    (src / "expect.json").write_text("{}")
    base = sorted(BASES.glob("*.py"))[0]
    (src / "variant.json").write_text(json.dumps({"base": base.stem, "edits": []}))
    out = materialize_case(src, tmp_path / "out")
    assert out.name == "some_case" and sorted(p.name for p in out.iterdir()) == ["expect.json", "train_gpt.py"]
    assert (out / "train_gpt.py").read_bytes() == base.read_bytes()
    (src / "train_gpt.py").write_text("print(1)\n")
    with pytest.raises(VariantError, match="both"):
        materialize_case(src, tmp_path / "again")


def test_every_variant_applies_and_every_base_is_used(tmp_path):
    used = set()
    variants = sorted(FIXTURES.glob("*/*/*/variant.json"))
    assert variants
    for i, v in enumerate(variants):
        used.add(json.loads(v.read_text())["base"])
        assert (materialize_case(v.parent, tmp_path / str(i)) / "train_gpt.py").stat().st_size > 0
    assert {p.stem for p in BASES.glob("*.py")} <= used


@pytest.mark.parametrize("module,kind,case", list(_cases()))
def test_fixture(module: str, kind: str, case: Path, tmp_path: Path):
    from rules.engine import context_for

    case = materialize_case(case, tmp_path)
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
