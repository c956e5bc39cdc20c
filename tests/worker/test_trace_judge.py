"""The trace judge (rules/checks/_runs.py) and the run-only results (rules/runs_judge.py) on
synthetic traces: the replay logic, independent of any real run."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rules.checks import _runs
from rules.checks._runs import Ranges, merge, ttt_findings
from rules.context import AuditContext, RunEvidence, Submission
from rules.logs import ParsedLog
from rules.model import Evidence, RuleResult
from rules.runs_judge import hardware_calibration, reproduction_matches_claims


def _sub(logs=()):
    return Submission(root=Path("."), name="x", sha256="0", files=[], track=None, readme=None,
                      submission_json=None, submission_json_file=None, submission_json_error=None,
                      logs=list(logs), sources=[])


def _ctx(runs, logs=()):
    return AuditContext(submission=_sub(logs), policy=None, runs=list(runs))


def _static(rule_id, outcome="pass"):
    return RuleResult(id=rule_id, code="PG000", title=rule_id, outcome=outcome, message="static",
                      evidence=[Evidence(source="code", file="train_gpt.py", line=1, text="x")])


def _rule(rule_id):
    return SimpleNamespace(ID=rule_id)


T = iter(range(1, 10_000))


def score(a, b, grad=False, rank="0", ph="eval", rows=None):
    ev = {"e": "score", "ph": ph, "grad": grad, "r": [[a, b]], "t": float(next(T)), "rank": rank}
    if rows:
        ev["rows"] = rows
    return ev


def step(a, b, rank="0", ph="eval"):
    return {"e": "step", "ph": ph, "r": [[a, b]] if b > a else [], "unres": 0 if b > a else 64,
            "t": float(next(T)), "rank": rank}


def phase(ph):
    return {"e": "phase", "ph": ph, "t": float(next(T)), "rank": "0"}


def legal_trace(chunks=4, size=100):
    ev = [phase("eval")]
    for c in range(chunks):
        ev.append(score(c * size, (c + 1) * size + 10))          # windows end a bit past the chunk
        if c < chunks - 1:
            ev.append(step(c * size, (c + 1) * size))
    return ev


def test_ranges_set_operations():
    r = Ranges()
    r.add(10, 20)
    r.add(30, 40)
    r.add(18, 31)
    assert (r.starts, r.ends) == ([10], [40])
    assert r.missing(0, 50) == [(0, 10), (40, 50)]
    assert r.covers(12, 39) and not r.covers(5, 12)
    r.add(50, 60)
    assert r.size() == 40 and r.missing(35, 55) == [(40, 50)]


def test_legal_score_first_passes_and_violations_fire():
    f = ttt_findings(legal_trace())
    assert f["c3"] == [] and f["c4"] == [] and f["steps_with_ranges"] == 3
    # train on chunk 1 before scoring it
    bad = [phase("eval"), score(0, 110), step(0, 100), step(100, 200), score(100, 210)]
    f = ttt_findings(bad)
    assert len(f["c3"]) == 1 and f["c3"][0]["missing"] == [(110, 200)]
    # a second pass over positions already trained on
    again = legal_trace() + [score(0, 100)]
    f = ttt_findings(again)
    assert f["c3"] == [] and len(f["c4"]) == 1


def test_per_window_rows_catch_rescoring_inside_a_merged_call():
    # the merged range reaches untrained tokens, but every window but the last was trained on
    ev = [phase("eval"), score(0, 120), step(0, 100),
          score(0, 120, rows=[[0, 32], [16, 48], [96, 128]])]
    f = ttt_findings(ev)
    assert len(f["c4"]) == 1 and f["c4"][0]["r"] == [(0, 32), (16, 48)]


def test_events_after_the_first_eval_marker_count_as_eval_on_late_ranks():
    ev = [phase("eval"), score(0, 50, rank="1", ph="train"), step(0, 50, rank="1", ph="train")]
    assert ttt_findings(ev)["steps_with_ranges"] == 1
    # ... and before it they are training events: ignored by the TTT replay
    early = [score(0, 50, ph="train"), step(0, 50, ph="train"), phase("eval")]
    assert ttt_findings(early)["steps"] == 0


def test_merge_ttt_outcomes_and_basis():
    ok = RunEvidence(seed=1, status="ok", trace=legal_trace(), trace_file="t.jsonl")
    res = merge(_rule("ttt-score-first"), _ctx([ok]), _static("ttt-score-first", "needs_review"))
    assert res.outcome == "pass" and res.basis == "reproduced"
    assert any(e.source == "trace" for e in res.evidence) and any(e.source == "code" for e in res.evidence)
    bad = RunEvidence(seed=1, status="ok", trace=[phase("eval"), step(0, 100), score(0, 100)])
    res = merge(_rule("ttt-score-first"), _ctx([ok, bad]), _static("ttt-score-first"))
    assert res.outcome == "fail" and "not yet scored" in " ".join(e.text for e in res.evidence)
    blind = RunEvidence(seed=1, status="ok", trace=[phase("eval"), step(0, 0)])
    assert merge(_rule("ttt-score-first"), _ctx([blind]), _static("ttt-score-first")).outcome == "needs_review"
    crashed = RunEvidence(seed=1, status="crashed", trace=[phase("train")])
    res = merge(_rule("ttt-score-first"), _ctx([crashed]), _static("ttt-score-first", "needs_review"))
    assert res.outcome == "needs_review" and res.basis == "claimed"


def test_merge_validation_in_training():
    setup_read = {"e": "open", "p": "/d/fineweb_val_000000.bin", "val": True, "ph": "setup", "t": 0.5}
    clean = RunEvidence(seed=1, status="ok", trace=[setup_read, phase("train"), phase("eval")])
    res = merge(_rule("validation-in-training"), _ctx([clean]), _static("validation-in-training"))
    assert res.outcome == "pass" and "before training" in res.evidence[-1].text
    train_read = dict(setup_read, ph="train", t=float(next(T)))
    dirty = RunEvidence(seed=1, status="ok", trace=[phase("train"), train_read, phase("eval")])
    res = merge(_rule("validation-in-training"), _ctx([dirty]), _static("validation-in-training"))
    assert res.outcome == "fail" and res.basis == "reproduced"
    sampled = RunEvidence(seed=1, status="ok", trace=[phase("train"), score(0, 64, grad=True, ph="train"),
                                                     phase("eval")])
    assert merge(_rule("validation-in-training"), _ctx([sampled]),
                 _static("validation-in-training")).outcome == "fail"


def test_merge_network_access():
    attempt = {"e": "net", "kind": "connect", "addr": "('1.2.3.4', 443)", "allowed": False, "ph": "eval", "t": 1.0}
    local = {"e": "net", "kind": "connect", "addr": "('127.0.0.1', 29500)", "allowed": True, "ph": "setup", "t": 1.0}
    run = RunEvidence(seed=1, status="ok", trace=[local], network_isolated=True)
    assert merge(_rule("network-access"), _ctx([run]), _static("network-access")).outcome == "pass"
    run2 = RunEvidence(seed=1, status="ok", trace=[local, attempt], network_isolated=False)
    res = merge(_rule("network-access"), _ctx([run2]), _static("network-access"))
    assert res.outcome == "fail" and "1.2.3.4" in res.evidence[-1].text


def test_merge_sizes_times_and_slow_node():
    big = RunEvidence(seed=1, status="ok", artifact_bytes=16_000_001)
    assert merge(_rule("artifact-size"), _ctx([big]), _static("artifact-size")).outcome == "fail"
    small = RunEvidence(seed=1, status="ok", artifact_bytes=15_000_000)
    assert merge(_rule("artifact-size"), _ctx([small]), _static("artifact-size")).measured == 15_000_000
    slow_log = ParsedLog(file="run.log", train_time_ms=650_000.0)
    over = RunEvidence(seed=1, status="ok", parsed=slow_log, wall_s={"first_step": 1.0, "train_end": 660.0})
    assert merge(_rule("train-time"), _ctx([over]), _static("train-time")).outcome == "fail"
    over.calibration = {"factor": 1.4, "node": "gpu-7", "gpu": "H100 PCIe"}
    res = merge(_rule("train-time"), _ctx([over]), _static("train-time"))
    assert res.outcome == "needs_review" and "gpu-7" in res.message
    ev_log = ParsedLog(file="run.log", eval_time_ms=100_000.0)
    fine = RunEvidence(seed=1, status="ok", parsed=ev_log, wall_s={"train_end": 5.0, "end": 140.0})
    assert merge(_rule("eval-time"), _ctx([fine]), _static("eval-time")).outcome == "pass"


def test_merge_without_runs_or_for_other_rules_is_identity():
    st = _static("ttt-score-first", "fail")
    assert merge(_rule("ttt-score-first"), _ctx([]), st) is st
    run = RunEvidence(seed=1, status="ok", trace=legal_trace())
    st2 = _static("byte-accounting")
    assert merge(_rule("byte-accounting"), _ctx([run]), st2) is st2


def test_merge_never_raises_on_garbage():
    run = RunEvidence(seed=1, status="ok", trace=[{"e": "score", "ph": "eval", "r": [["a", None]]}])
    res = merge(_rule("ttt-score-first"), _ctx([run]), _static("ttt-score-first"))
    assert res.outcome == "pass" and any("could not be read" in e.text for e in res.evidence)


def _log(seed, bpb):
    return ParsedLog(file=f"train_seed{seed}.log", seed=seed, val_bpb=bpb)


def test_reproduction_matches_claims_tolerance():
    claims = [_log(1337, 1.1118), _log(42, 1.1127), _log(2025, 1.1121)]

    def run(seed, bpb, status="ok"):
        return RunEvidence(seed=seed, status=status, parsed=ParsedLog(file="r.log", seed=seed, val_bpb=bpb))
    ok = reproduction_matches_claims(_ctx([run(1337, 1.1125), run(42, 1.1120)], claims))
    assert ok.outcome == "pass" and ok.limit == 0.002 and ok.id == "reproduction-matches-claims"
    bad = reproduction_matches_claims(_ctx([run(1337, 1.1200)], claims))
    assert bad.outcome == "fail" and bad.code == "PG501"
    slow = _ctx([run(1337, 1.1200)], claims)
    slow.runs[0].calibration = {"factor": 2.0, "node": "n1"}
    assert reproduction_matches_claims(slow).outcome == "needs_review"
    partial = reproduction_matches_claims(_ctx([run(1337, 1.1119), run(42, None, "timeout")], claims))
    assert partial.outcome == "needs_review"
    wide = [_log(1, 1.10), _log(2, 1.11), _log(3, 1.12)]     # std 0.01 -> tolerance 0.03
    assert reproduction_matches_claims(_ctx([run(1, 1.125)], wide)).outcome == "pass"


def test_hardware_calibration_names_slow_node():
    assert hardware_calibration(_ctx([RunEvidence(seed=1, status="ok")])).outcome == "not_applicable"
    fast = RunEvidence(seed=1, status="ok", calibration={"factor": 1.02, "node": "a", "ms_per_step": 89.1})
    assert hardware_calibration(_ctx([fast])).outcome == "pass"
    slow = RunEvidence(seed=1, status="ok", calibration={"factor": 3.5, "node": "cpu-box"})
    res = hardware_calibration(_ctx([fast, slow]))
    assert res.outcome == "warn" and "cpu-box" in res.message and res.code == "PG502"


def test_judges_cover_the_rule_ids_of_the_registry():
    from rules.checks import load_rules
    ids = {m.ID for m in load_rules()}
    assert set(_runs._JUDGES) <= ids


def test_duplicated_text_is_not_a_violation_when_another_copy_qualifies():
    # window [300, 364) is also the text at [20, 84): trained at 20.., never at 300..
    ev = [phase("eval"), score(0, 110), step(0, 100),
          dict(score(300, 364), amb=[[300, 364, [20]]])]
    # primary copy untrained -> fine; now the reverse: the reported copy was trained, the other not
    ev2 = [phase("eval"), score(0, 110), step(0, 100), score(300, 400),
           dict(score(20, 84), amb=[[20, 84, [300]]])]
    assert ttt_findings(ev)["c4"] == []
    assert ttt_findings(ev2)["c4"] == []
    ev3 = [phase("eval"), score(0, 110), step(0, 100), score(20, 84)]
    assert len(ttt_findings(ev3)["c4"]) == 1
    # a training step attributed to an unscored copy whose twin was scored: not C3
    ev4 = [phase("eval"), score(500, 600), dict(step(20, 84), amb=[[20, 84, [520]]])]
    assert ttt_findings(ev4)["c3"] == []
    assert len(ttt_findings([phase("eval"), score(500, 600), step(20, 84)])["c3"]) == 1
