"""Policies: the registry, the margin conversion, and that the selected policy decides the outcome
while both readings are always reported."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rules.errors import InputError
from rules.policies import DEFAULT_POLICY, POLICIES, UNKNOWN_POLICY, get_policy, other_policies

FX = Path(__file__).resolve().parents[2] / "rules" / "checks" / "fixtures" / "seed_statistics"


def test_default_is_the_leaderboard_practice():
    assert DEFAULT_POLICY == "leaderboard-2026-04"
    p = get_policy(None)
    assert p.id == "leaderboard-2026-04" and p.alpha == 0.25 and p.margin_nats == 0.0
    assert get_policy("") is p


def test_readme_policy_is_the_launch_text():
    p = get_policy("readme-2026-03")
    assert p.alpha == 0.01 and p.margin_nats == 0.005 and p.min_seeds == 3


def test_unknown_policy_is_bad_input_with_a_stable_code():
    with pytest.raises(InputError) as e:
        get_policy("readme-2027")
    assert e.value.code == UNKNOWN_POLICY
    assert "readme-2027" in e.value.message and "leaderboard-2026-04" in e.value.message


@pytest.mark.parametrize("ratio,expected", [(1.689, 0.005 / 1.689), (2.583, 0.005 / 2.583), (2.188, 0.005 / 2.188)])
def test_margin_uses_the_submissions_own_nats_per_bpb(ratio, expected):
    # rules.md Rule 4: 0.005 nats ≈ 0.0030 bpb (SP1024), 0.0019 (SP8192), 0.0023 (CaseOps)
    assert get_policy("readme-2026-03").margin_bpb(ratio) == pytest.approx(expected)
    assert get_policy("leaderboard-2026-04").margin_bpb(ratio) == 0.0


def test_margin_without_a_ratio_is_the_conservative_sp1024_one():
    assert get_policy("readme-2026-03").margin_bpb(None) == pytest.approx(0.005 / 1.689)


def test_a_policy_cannot_be_edited_in_place():
    p = get_policy("readme-2026-03")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.alpha = 0.05  # type: ignore[misc]
    assert [q.id for q in other_policies(p)] == ["leaderboard-2026-04"]
    assert set(POLICIES) == {"readme-2026-03", "leaderboard-2026-04"}


def test_the_selected_policy_decides_and_both_readings_are_shown():
    """~0.0011 bpb better than the frontier row: p < 0.25 but short of the README's margin."""
    from rules.engine import check

    case = FX / "pass" / "clears_leaderboard_policy"
    lb = check(case, policy="leaderboard-2026-04")
    rd = check(case, policy="readme-2026-03")
    lb_rule = next(r for r in lb.rules if r.id == "seed-statistics")
    rd_rule = next(r for r in rd.rules if r.id == "seed-statistics")
    assert lb_rule.outcome == "pass" and rd_rule.outcome == "fail"
    assert lb.policy == "leaderboard-2026-04" and rd.policy == "readme-2026-03"
    for v in (lb, rd):
        readings = v.statistics.readings
        assert readings["leaderboard-2026-04"]["significant"] is True
        assert readings["readme-2026-03"]["significant"] is False
        assert readings["readme-2026-03"]["margin_bpb"] == pytest.approx(0.005 / readings["nats_per_bpb"], rel=1e-3)
    assert lb.statistics.alpha == 0.25 and lb.statistics.significant is True
    assert rd.statistics.alpha == 0.01 and rd.statistics.significant is False
    assert rd.statistics.margin_bpb > 0 and lb.statistics.margin_bpb == 0
