"""The frontier data file and the choice of the baseline row."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rules.frontier import DATA_FILE, Frontier, FrontierRow, load_frontier

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
RECORDS = SHARED / "fixtures" / "records" / "track_10min_16mb"
needs_fixtures = pytest.mark.skipif(not RECORDS.is_dir(), reason="../shared fixtures not present")


class _Sub:
    def __init__(self, name: str, meta: dict | None):
        self.name = name
        self.submission_json = meta


def _fixture_sub(folder: str) -> _Sub:
    return _Sub(folder, json.loads((RECORDS / folder / "submission.json").read_text()))


@needs_fixtures
def test_data_file_is_what_the_build_script_makes():
    spec = importlib.util.spec_from_file_location("build_frontier", REPO / "scripts" / "build_frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.build(SHARED) == json.loads(DATA_FILE.read_text())


@needs_fixtures
def test_rows_follow_the_leaderboard_and_explain_missing_seeds():
    board = json.loads((SHARED / "fixtures" / "leaderboard.json").read_text())
    f = load_frontier()
    assert [(r.run, r.val_bpb) for r in f.rows] == [(r["run"], r["val_bpb"]) for r in board]
    for row in f.rows:
        assert row.seeds or row.no_seeds_reason, row.run
        if row.seeds:
            assert len(row.seeds) == len(row.seed_ids) and row.seeds_source
            # a row whose seeds are submission.json's per-seed values has their mean as its value
            # (March rows whose seeds come from logs often report their best single run instead)
            if len(row.seeds) >= 3 and row.seeds_source.startswith("submission.json"):
                assert abs(sum(row.seeds) / len(row.seeds) - row.val_bpb) < 6e-4, row.run
    assert len([r for r in f.record_rows if len(r.seeds) >= 3]) >= 25


@needs_fixtures
def test_lookups_and_matched_rows():
    f = load_frontier()
    r1851 = f.by_pr(1851)
    assert r1851.folder == "2026-04-29_SmearGateBOSFix_3Seed_1.06141"          # via supports_pr
    assert r1851.seeds == pytest.approx([1.06128183, 1.06086831, 1.06220261])  # the original runs
    assert f.by_pr("#1493").seeds == pytest.approx([1.08079352, 1.08103103, 1.08118408])  # log precision
    assert f.by_folder("records/track_10min_16mb/2026-04-09_A2_Muon097_3Seed").pr == 1514
    assert f.by_pr(99999) is None and f.by_pr(None) is None and f.by_folder(None) is None
    assert f.best().pr == 1855


@needs_fixtures
@pytest.mark.parametrize("folder, expected_pr", [
    ("2026-04-22_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT_MLPClip12", 1736),  # #1769 -> #1736
    ("2026-04-09_A2_Muon097_3Seed", 1493),                   # base_pr 1394 is lineage, not the baseline
    ("2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072", 549),    # comparison_baseline_pr 549
    ("2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611", 1851),
    ("2026-04-29_SmearGateBOSFix_3Seed_1.06141", 1787),      # the #1851 row's own folder: not itself
])
def test_baseline_for_fixture_records(folder, expected_pr):
    f = load_frontier()
    choice = f.explain_baseline(_fixture_sub(folder))
    assert choice.row is not None and choice.row.pr == expected_pr, choice.reason
    assert choice.reason
    if folder.startswith("2026-04-09_A2"):
        assert "base_pr #1394" in choice.reason


def _toy() -> Frontier:
    return Frontier([
        FrontierRow("record", "a", 1.20, "x", "2026-03-18", 10, None, [1.2, 1.21, 1.19]),
        FrontierRow("record", "b", 1.10, "y", "2026-03-25", 20, "2026-03-25_B", [1.1, 1.1, 1.1]),
        FrontierRow("record", "c", 1.15, "z", "2026-03-26", None, None, []),
        FrontierRow("non_record", "d", 0.90, "w", "2026-03-20", 15, None, [0.9]),
        FrontierRow("record", "e", 1.05, "v", "2026-04-01", 30, None, [1.05, 1.05, 1.06]),
    ])


def test_baseline_rules_on_a_toy_frontier():
    f = _toy()
    assert f.baseline_for(_Sub("2026-03-30_New", {})).run == "b"            # by date, lowest bpb before it
    assert f.baseline_for(_Sub("x", {"date": "2026-03-20T10:00:00Z"})).run == "a"
    assert f.baseline_for(_Sub("x", {"pr": 25})).run == "b"                 # by PR number
    assert f.baseline_for(_Sub("x", {"pr": 5})) is None                     # nothing precedes it
    assert f.baseline_for(_Sub("x", {})).run == "e"                         # unknown: the best row
    assert f.baseline_for(_Sub("x", None)).run == "e"
    assert f.baseline_for(_Sub("2026-03-25_B", {})).run == "a"              # its own row is excluded
    assert f.baseline_for(_Sub("2026-04-02_N", {"comparison_baseline_pr": "PR #10"})).run == "a"
    assert f.baseline_for(_Sub("2026-04-02_N", {"comparison_baseline_pr": 777})).run == "e"  # unknown PR
    assert f.baseline_for(_Sub("2026-03-17_Early", {"base_pr": 20})).run == "b"  # base_pr when nothing precedes
    assert f.baseline_for({"date": "2026-03-27"}).run == "b"                # a plain dict works too
    assert f.baseline_for(_Sub("2026-03-30_New", {"date": "garbage", "pr": "n/a"})).run == "b"


def test_load_from_a_path(tmp_path):
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"rows": [{"track": "record", "run": "r", "val_bpb": 1.1, "date": "2026-04-01",
                                       "pr": "#12", "seeds": [1.1, 1.2]}]}))
    f = load_frontier(p)
    assert f.rows[0].pr == 12 and f.rows[0].seeds == [1.1, 1.2] and f.rows[0].author is None
