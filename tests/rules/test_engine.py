"""The engine: contexts built by hand (ParsedLog objects, no files) and from the example folders;
a rule that raises becomes needs_review; seeds table roles; statistics; submission info."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import rules.checks.train_time as train_time
from rules.context import AuditContext, RunEvidence, Submission
from rules.engine import _run_rule, audit, check, context_for, seeds_table
from rules.errors import InputError
from rules.logs import LogLine, ParsedLog
from rules.model import Verdict
from rules.policies import get_policy

REPO = Path(__file__).resolve().parents[2]


def _log(file: str, seed: int | None, bpb: float | None, *, train_ms: float | None = 599_500,
         artifact: int | None = 15_900_000, eval_ms: float | None = 400_000, config=None) -> ParsedLog:
    lg = ParsedLog(file=file, seed=seed, val_bpb=bpb, val_loss=None if bpb is None else bpb * 2.583,
                   score_tag="quantized_ttt_phased" if bpb is not None else None,
                   artifact_bytes=artifact, model_bytes=None if artifact is None else artifact - 20_000,
                   code_bytes=None if artifact is None else 20_000, train_time_ms=train_ms,
                   stopped_early=train_ms is not None, stop_step=4900 if train_ms else None,
                   eval_time_ms=eval_ms, config=dict(config or {"model_dim": "512", "seed": str(seed)}))
    if bpb is not None:
        lg.where["val_bpb"] = LogLine(900, f"quantized_ttt_phased val_loss:{bpb * 2.583:.8f} val_bpb:{bpb:.8f}")
    return lg


def _ctx(logs, sj=None, track="10min_16mb", policy=None, tmp: Path | None = None) -> AuditContext:
    sj = sj if sj is not None else {"name": "hand-built", "author": "a", "github_id": "gh", "date": "2026-04-30",
                                    "val_bpb": 1.0600}
    sub = Submission(root=tmp or Path("/nonexistent"), name="2026-04-30_HandBuilt", sha256="0" * 64,
                     files=["README.md", "submission.json"] + [lg.file for lg in logs], track=track,
                     readme="# x", submission_json=sj, submission_json_file="submission.json",
                     submission_json_error=None, logs=logs, sources=[])
    from rules.engine import _frontier

    return AuditContext(submission=sub, policy=get_policy(policy), frontier=_frontier())


def test_a_rule_that_raises_becomes_needs_review(monkeypatch):
    def boom(ctx):
        raise KeyError("stop_step")

    monkeypatch.setattr(train_time, "check", boom)
    v = audit(_ctx([_log("train_seed1.log", 1, 1.06)]))
    r = next(r for r in v.rules if r.id == "train-time")
    assert r.outcome == "needs_review" and r.code == "PG202"
    assert "KeyError" in r.message and "review it by hand" in r.message
    assert v.outcome in ("needs_review", "fail")
    assert len(v.rules) == 15


def test_a_rule_module_that_cannot_load_is_a_review_item():
    r = _run_rule("no_such_rule_module", _ctx([_log("train_seed1.log", 1, 1.06)]))
    assert r.outcome == "needs_review" and "could not finish" in r.message


def test_a_rule_returning_garbage_is_a_review_item(monkeypatch):
    monkeypatch.setattr(train_time, "check", lambda ctx: {"outcome": "pass"})
    r = _run_rule("train_time", _ctx([_log("train_seed1.log", 1, 1.06)]))
    assert r.outcome == "needs_review" and "RuleResult" in r.message


def test_outcome_is_fail_when_a_log_rule_fails():
    logs = [_log(f"train_seed{s}.log", s, 1.06 + s * 1e-5, train_ms=602_048 if s == 2 else 599_000) for s in (1, 2, 3)]
    v = audit(_ctx(logs))
    tt = next(r for r in v.rules if r.id == "train-time")
    assert tt.outcome == "fail" and tt.measured == pytest.approx(602_048)
    assert v.outcome == "fail"
    assert Verdict.outcome_of(v.rules) == "fail"


def test_seeds_table_roles_duplicates_reruns_eval_only():
    logs = [
        _log("train_seed42.log", 42, 1.0601),
        _log("train.log", 42, 1.0601),                                 # a copy of seed 42
        _log("train_seed7.log", 7, 1.0605),
        _log("train_seed9.log", 9, 1.0597),
        _log("train_seed9_rerun_gptq8s.log", 9, 1.0599),               # compliance re-run
        _log("ttt_only/seed_7.log", 7, 1.0590, train_ms=None, artifact=None),  # eval-only re-run
        _log("train_seed5.log", 5, None),                              # no score: crashed
    ]
    ctx = _ctx(logs)
    rows = seeds_table(ctx)
    roles = {r.log: r.role for r in rows}
    assert roles == {"train_seed42.log": "seed", "train.log": "duplicate", "train_seed7.log": "seed",
                     "train_seed9.log": "seed", "train_seed9_rerun_gptq8s.log": "rerun",
                     "ttt_only/seed_7.log": "eval_only", "train_seed5.log": "unscored"}
    seed7 = next(r for r in rows if r.log == "train_seed7.log")
    assert seed7.val_bpb == pytest.approx(1.0590) and "eval-only" in seed7.note
    assert seed7.train_time_s == pytest.approx(599.5) and seed7.artifact_bytes == 15_900_000
    v = audit(ctx)
    assert v.statistics.n == 3
    assert v.statistics.mean_bpb == pytest.approx((1.0601 + 1.0590 + 1.0597) / 3)


def test_same_seed_with_different_scores_are_separate_runs():
    logs = [_log(f"train_v{i}.txt", 1337, 1.19 + i * 1e-4) for i in range(4)]
    g = seeds_table(_ctx(logs))
    assert [r.role for r in g] == ["seed"] * 4


def test_statistics_always_carry_both_policies():
    logs = [_log(f"train_seed{s}.log", s, b) for s, b in ((1, 1.0590), (2, 1.0595), (3, 1.0588))]
    for pid in ("leaderboard-2026-04", "readme-2026-03"):
        v = audit(_ctx(logs, policy=pid))
        st = v.statistics
        assert st.n == 3 and st.std_bpb is not None
        assert {"leaderboard-2026-04", "readme-2026-03"} <= set(st.readings)
        assert st.alpha == get_policy(pid).alpha
        assert st.baseline is not None and len(st.baseline.seeds) >= 2
        assert st.p_value == st.readings[pid]["p_value"]


def test_submission_info_comes_from_submission_json():
    v = audit(_ctx([_log("train_seed1.log", 1, 1.06)], sj={"run_name": "R", "author": "A", "github_id": 12,
                                                             "mean_val_bpb": 1.0612}))
    info = v.submission
    assert (info.name, info.author, info.github_id, info.claimed_val_bpb) == ("R", "A", "12", 1.0612)
    assert info.track == "10min_16mb" and info.sha256 == "0" * 64


def test_runs_are_passed_through():
    ctx = _ctx([_log("train_seed1.log", 1, 1.06)])
    ctx.runs = [RunEvidence(seed=1, status="ok", log_file="run1.log", artifact_bytes=15_000_000)]
    v = audit(ctx)
    assert v.runs and v.runs[0]["status"] == "ok" and v.runs[0]["artifact_bytes"] == 15_000_000


def test_context_for_rejects_a_missing_path_and_an_unknown_policy(tmp_path):
    with pytest.raises(InputError):
        context_for(tmp_path / "nope")
    with pytest.raises(InputError) as e:
        context_for(REPO / "examples" / "legal_submission", policy="nope")
    assert e.value.code == "unknown_policy"


def test_the_legal_example_passes_every_log_rule():
    v = check(REPO / "examples" / "legal_submission")
    by_id = {r.id: r for r in v.rules}
    for rid in ("claims-match-logs", "artifact-size", "train-time", "eval-time", "seed-statistics"):
        assert by_id[rid].outcome == "pass", (rid, by_id[rid].message)
    assert by_id["package-layout"].outcome == "warn"       # the folder is not named YYYY-MM-DD_...
    assert [s.seed for s in v.seeds] == [42, 1337, 2025]
    json.dumps(v.to_json())


def test_the_illegal_example_fails_on_size():
    v = check(REPO / "examples" / "illegal_submission")
    size = next(r for r in v.rules if r.id == "artifact-size")
    assert v.outcome == "fail" and size.outcome == "fail" and size.measured > 16_000_000
    assert any(e.file and e.line and "Total submission size" in e.text for e in size.evidence)


def _write_example(tmp_path: Path, name: str = "2026-03-19_Case") -> Path:
    from api.demo import LEGAL, build

    return build(LEGAL, tmp_path / "records" / "track_10min_16mb" / name)


def test_claim_found_at_an_earlier_score_line_is_not_a_misclaim(tmp_path):
    """An experiment appended after the scored line (04-04 seed 42) moves the parser's "last score"
    line; the JSON's per-seed value is found at the earlier line and the seed keeps it."""
    d = _write_example(tmp_path)
    log = d / "train_seed42.log"
    log.write_text(log.read_text() + "final_int8_ttt val_loss:2.03500000 val_bpb:1.20521000 eval_time:90000ms\n")
    v = check(d)
    claims = next(r for r in v.rules if r.id == "claims-match-logs")
    assert claims.outcome == "pass", claims.message
    assert "line" in claims.message and "final_int8_sliding_window_exact" in claims.message
    row = next(s for s in v.seeds if s.seed == 42)
    assert row.val_bpb == pytest.approx(1.19903117) and row.note


def test_string_val_bpb_fails_package_layout(tmp_path):
    d = _write_example(tmp_path)
    sj = json.loads((d / "submission.json").read_text())
    sj["val_bpb"] = "1.198"
    (d / "submission.json").write_text(json.dumps(sj))
    r = next(r for r in check(d).rules if r.id == "package-layout")
    assert r.outcome == "fail" and "not a number" in r.message


def test_readme_run_command_with_force_stop_step_warns(tmp_path):
    d = _write_example(tmp_path)
    (d / "README.md").write_text("# x\n\n```bash\nFORCE_STOP_STEP=4945 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    r = next(r for r in check(d).rules if r.id == "train-time")
    assert r.outcome == "warn" and "FORCE_STOP_STEP=4945" in r.message
    assert any(e.source == "readme" and e.line == 4 for e in r.evidence)
