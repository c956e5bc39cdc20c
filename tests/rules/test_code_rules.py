"""The code rules (PG204, PG401–PG408) on contexts built directly (no submission loader needed):
gates, configuration-dependent decisions, evidence lines, odd input, and every fixture folder."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from rules.logs import ParsedLog
from tests.rules.code_rule_support import context_for_dir, context_for_script, direct_context
from tests.rules.fixture_cases import case_script, materialize_case

CODE_RULES = ["calibration_within_budget", "ttt_score_first", "ngram_target_in_key", "two_pass_rescore",
              "gptq_on_validation", "validation_in_training", "normalized_distribution", "byte_accounting",
              "network_access"]
FIXTURES = Path(__file__).resolve().parents[2] / "rules" / "checks" / "fixtures"


def _mod(name: str):
    return importlib.import_module(f"rules.checks.{name}")


def _script(case: str, module: str = "ttt_score_first", kind: str = "fire") -> str:
    script = case_script(FIXTURES / module / kind / case)
    assert script is not None, (module, kind, case)
    return script


@pytest.mark.parametrize("name", CODE_RULES)
def test_no_script_is_not_applicable(name):
    res = _mod(name).check(context_for_script(None))
    assert res.outcome == "not_applicable"
    assert "no training script" in res.message


@pytest.mark.parametrize("name", [n for n in CODE_RULES if n != "calibration_within_budget"])
def test_syntax_error_needs_review_with_a_sentence(name):
    res = _mod(name).check(context_for_script("def main(:\n    pass\n"))
    assert res.outcome == "needs_review"
    assert "line 1" in res.message


ODD_SCRIPTS = [
    "",
    "x = 1\n",
    "import os\nos.system('echo hi')\n",
    "def f():\n    return f()\nf()\n",
    "lambda: (yield)\n",
    "class A:\n    def __init__(self):\n        super().__init__()\n    def main(self):\n        return self.main()\n",
    "def main():\n    while True:\n        loss = model(*loader.next_batch())\n        loss.backward()\n"
    "        opt.step()\n    main()\n",
    "val_tokens = load()\nfor i in range(3):\n    (model(val_tokens[i]) ** (1 / n_bytes)).backward()\n",
    "x = (" * 50 + "1" + ")" * 50 + "\n",
]


@pytest.mark.parametrize("name", CODE_RULES)
@pytest.mark.parametrize("text", ODD_SCRIPTS, ids=range(len(ODD_SCRIPTS)))
def test_odd_scripts_never_raise(name, text):
    res = _mod(name).check(context_for_script(text))
    assert res.outcome in ("pass", "fail", "warn", "needs_review", "not_applicable")
    assert res.message


def _log(**config) -> ParsedLog:
    return ParsedLog(file="train_seed42.log", config={k: str(v) for k, v in config.items()})


def test_ttt_decision_follows_the_logged_configuration():
    mod = _mod("ttt_score_first")
    default_on = _script("prequant_adamw_before_serialize")
    assert mod.check(context_for_script(default_on)).outcome == "fail"
    off = mod.check(context_for_script(default_on, logs=[_log(ttt_enabled=False)]))
    assert off.outcome == "pass" and "off" in off.message
    assert off.evidence and "ttt_enabled" in off.evidence[0].text
    default_off = _script("prequant_switched_on_by_log")
    assert mod.check(context_for_script(default_off)).outcome == "pass"
    assert mod.check(context_for_script(default_off, logs=[_log(ttt_enabled=True)])).outcome == "fail"


def test_fail_evidence_is_the_offending_source_line(tmp_path):
    """Every fail/needs_review fixture names a line whose text is that line of the script."""
    checked = 0
    for module in CODE_RULES:
        for stored in sorted((FIXTURES / module / "fire").glob("*/")):
            case = materialize_case(stored, tmp_path / module)
            script = case / "train_gpt.py"
            res = _mod(module).check(context_for_dir(case))
            assert res.outcome in ("fail", "needs_review"), (case, res.message)
            code_ev = [e for e in res.evidence if e.source == "code" and e.file == "train_gpt.py"]
            if not script.exists() or not code_ev:
                continue
            lines = script.read_text().splitlines()
            for e in code_ev:
                assert e.line is not None and 1 <= e.line <= len(lines), (case, e)
                assert e.text == lines[e.line - 1].strip()[:300], (case, e)
            checked += 1
    assert checked >= 25


def _expected_cases(module: str, tmp_path: Path):
    """(materialized case folder, its expect.json, the outcomes it allows) for each of a rule's cases."""
    for exp_file in sorted((FIXTURES / module).glob("*/*/expect.json")):
        kind = exp_file.parent.parent.name
        exp = json.loads(exp_file.read_text())
        want = exp.get("outcome", "fail" if kind == "fire" else ["pass", "not_applicable"])
        yield materialize_case(exp_file.parent, tmp_path / kind), exp, [want] if isinstance(want, str) else want


@pytest.mark.parametrize("module", CODE_RULES)
def test_fixture_expectations_per_rule(module, tmp_path):
    """Each code rule has several must-fire and must-not-fire folders, and they hold (through
    context_for_dir: the real loader, or a direct build while it is missing)."""
    cases = sorted((FIXTURES / module).glob("*/*/expect.json"))
    assert len([c for c in cases if c.parent.parent.name == "fire"]) >= 3
    assert len([c for c in cases if c.parent.parent.name == "pass"]) >= 3
    for case, exp, want in _expected_cases(module, tmp_path):
        res = _mod(module).check(context_for_dir(case))
        assert res.outcome in want, (case.name, res.outcome, res.message)
        if "evidence_contains" in exp:
            assert any(exp["evidence_contains"] in e.text for e in res.evidence), (case.name, res.evidence)


def test_network_helper_imported_by_the_script_needs_review():
    script = "import fetch_data\n\ndef main():\n    fetch_data.get()\n"
    helper = "import requests\n\ndef get():\n    return requests.get('https://example.org').text\n"
    res = _mod("network_access").check(context_for_script(script, extra={"fetch_data.py": helper}))
    assert res.outcome == "needs_review"
    assert res.evidence[0].file == "fetch_data.py" and "requests.get" in res.evidence[0].text


def test_unused_network_import_warns():
    res = _mod("network_access").check(context_for_script("import requests\n\ndef main():\n    return 1\n"))
    assert res.outcome == "warn" and "never calls" in res.message


def test_rules_with_run_evidence_go_through_the_merge_hook(monkeypatch):
    from rules.checks import _runs
    seen = []

    def spy(rule, ctx, static):
        seen.append(rule.CODE)
        return static
    monkeypatch.setattr(_runs, "merge", spy)
    ctx = context_for_script(_script("prequant_adamw_before_serialize"))
    for name in ("ttt_score_first", "validation_in_training", "network_access"):
        _mod(name).check(ctx)
    assert seen == ["PG401", "PG405", "PG408"]


def test_calibration_log_overflow_with_and_without_reserve():
    mod = _mod("calibration_within_budget")
    base = ParsedLog(file="train_seed1.log", train_time_ms=599_500.0, gptq_collect_s=3.5)
    res = mod.check(context_for_script(None, logs=[base]))
    assert res.outcome == "fail" and res.measured == pytest.approx(603.0)
    reserved = ParsedLog(file="train_seed1.log", train_time_ms=599_500.0, gptq_collect_s=3.5, gptq_reserve_ms=500.0)
    assert mod.check(context_for_script(None, logs=[reserved])).outcome == "needs_review"
    inside = ParsedLog(file="train_seed1.log", train_time_ms=592_000.0, gptq_collect_s=3.5, gptq_reserve_ms=8000.0)
    assert mod.check(context_for_script(None, logs=[inside])).outcome == "pass"
    selfgen = ParsedLog(file="train_seed1.log", train_time_ms=600_038.0, gptq_collect_s=48.0,
                        gptq_calib_source="self-generated")
    assert mod.check(context_for_script(None, logs=[selfgen])).outcome == "pass"


def test_validation_overlap_fingerprints_need_no_script():
    mod = _mod("validation_in_training")
    assert mod.check(context_for_script(None, logs=[ParsedLog(file="a.log", train_shards=1499)])).outcome == "fail"
    assert mod.check(context_for_script(None, logs=[ParsedLog(file="a.log", val_tokens=9_662_464)])).outcome == "fail"
    clean = mod.check(context_for_script(None, logs=[ParsedLog(file="a.log", train_shards=80, val_tokens=47_851_520)]))
    assert clean.outcome == "not_applicable"


@pytest.mark.parametrize("module", CODE_RULES)
def test_fixtures_hold_with_the_direct_builder(module, tmp_path):
    """The rules read only SourceFile/ParsedLog fields, so a context built without the loader
    gives the same outcomes."""
    for case, _exp, want in _expected_cases(module, tmp_path):
        res = _mod(module).check(direct_context(case))
        assert res.outcome in want, (case.name, res.outcome, res.message)
