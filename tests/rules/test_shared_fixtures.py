"""The issue's "Done when": every merged record folder in ../shared parses, and the static audit
gives none of them a `fail` from a log rule or from claims-match-logs; the code rules say
`not_applicable` because the fixtures ship no training script.

These folders are legal, merged records. When one fails here, fix the rule (and document the
tolerance in its docstring), never this test.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("PGOLF_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
RECORDS = SHARED / "fixtures" / "records"
FOLDERS = sorted(p for p in RECORDS.glob("track_*/*") if p.is_dir()) if RECORDS.is_dir() else []

LOG_RULES = {"artifact-size", "train-time", "eval-time", "calibration-within-budget", "claims-match-logs"}
CODE_RULES = {"ttt-score-first", "ngram-target-in-key", "two-pass-rescore", "gptq-on-validation",
              "validation-in-training", "normalized-distribution", "byte-accounting", "network-access"}

pytestmark = pytest.mark.skipif(not FOLDERS, reason=f"../shared fixtures not found at {RECORDS}")


@lru_cache(maxsize=None)
def _verdict(folder: Path):
    from rules.engine import check

    return check(folder)


def _ids(p: Path) -> str:
    return f"{p.parent.name.replace('track_', '')}/{p.name[:40]}"


def test_all_55_folders_are_present():
    assert len(FOLDERS) == 55, [p.name for p in FOLDERS]


@pytest.mark.parametrize("folder", FOLDERS, ids=_ids)
def test_folder_parses(folder: Path):
    from rules.engine import context_for

    ctx = context_for(folder)
    index = {(e["track"], e["folder"]): e for e in json.loads((RECORDS / "index.json").read_text())}
    entry = index[(folder.parent.name, folder.name)]
    shipped_logs = [f for f in entry["files"] if f.endswith((".log", ".txt")) and "requirements" not in f]
    assert sorted(lg.file for lg in ctx.submission.logs) == sorted(shipped_logs)
    assert isinstance(ctx.submission.submission_json, dict), ctx.submission.submission_json_error
    assert ctx.submission.track in ("10min_16mb", "non_record_16mb")
    assert ctx.submission.train_script is None   # the fixtures ship no script


@pytest.mark.parametrize("folder", FOLDERS, ids=_ids)
def test_no_log_rule_fails_a_merged_record(folder: Path):
    v = _verdict(folder)
    bad = [f"{r.id}: {r.message}" for r in v.rules if r.id in LOG_RULES and r.outcome == "fail"]
    assert not bad, bad


@pytest.mark.parametrize("folder", FOLDERS, ids=_ids)
def test_code_rules_are_not_applicable_without_a_script(folder: Path):
    v = _verdict(folder)
    ids = {r.id for r in v.rules}
    assert CODE_RULES <= ids
    wrong = [f"{r.id}: {r.outcome}" for r in v.rules if r.id in CODE_RULES and r.outcome != "not_applicable"]
    assert not wrong, wrong


@pytest.mark.parametrize("folder", FOLDERS, ids=_ids)
def test_verdict_json_has_the_contract_keys(folder: Path):
    from rules.cli import verdict_json

    d = json.loads(verdict_json(_verdict(folder)))
    assert d["schema"] == "pgolf-audit/verdict/1"
    assert d["outcome"] in ("pass", "fail", "needs_review")
    assert len(d["rules"]) == 15


def test_merged_record_scores_reach_the_seeds_table():
    """Spot values read from the logs, so a regression in seed grouping shows up (04-22: 5 of 7 runs)."""
    folder = next(p for p in FOLDERS if p.name.startswith("2026-04-22_SP8192_CaseOps"))
    v = _verdict(folder)
    seeds = {s.seed: s for s in v.seeds if getattr(s, "role", "seed") == "seed"}
    assert sorted(seeds) == [1, 314, 777, 1337, 2025]
    assert seeds[314].val_bpb == pytest.approx(1.06356801, abs=1e-8)
    assert v.statistics.n == 5
    # #1769 vs #1736: the leaderboard README reports p = 0.063 (rules.md Rule 4)
    assert v.statistics.readings["leaderboard-2026-04"]["p_value"] == pytest.approx(0.0625, abs=0.001)
    assert v.statistics.readings["disclosure"]["runs"] == 7


def test_rerun_logs_are_listed_but_not_counted():
    folder = next(p for p in FOLDERS if p.name.startswith("2026-04-29_SmearGateBOSFix"))
    v = _verdict(folder)
    roles = sorted(getattr(s, "role", "seed") for s in v.seeds)
    assert roles.count("seed") == 3 and roles.count("rerun") == 3
    claims = next(r for r in v.rules if r.id == "claims-match-logs")
    assert claims.outcome == "pass", claims.message
