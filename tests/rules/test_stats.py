"""Pure-Python seed statistics: the README p-values from fixture seeds, and equality with scipy."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from scipy import special, stats as sps

from rules.stats import (betainc_regularized, margin_bpb, mean, nats_per_bpb, sample_std,
                         student_t_cdf, welch_one_sided)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
RECORDS = SHARED / "fixtures" / "records" / "track_10min_16mb"
needs_fixtures = pytest.mark.skipif(not RECORDS.is_dir(), reason="../shared fixtures not present")


def _seed_bpbs(folder: str) -> list[float]:
    meta = json.loads((RECORDS / folder / "submission.json").read_text())
    per_seed = meta.get("seed_results") or meta.get("seeds")
    return [float(v["val_bpb"]) for v in per_seed.values()]


@needs_fixtures
@pytest.mark.parametrize("new, old, readme_p", [
    ("2026-04-09_A2_Muon097_3Seed", "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT", 0.020),  # #1514 vs #1493
    ("2026-04-22_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT_MLPClip12",
     "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT", 0.063),                      # #1769 vs #1736
])
def test_readme_p_values_from_fixture_seeds(new, old, readme_p):
    a, b = _seed_bpbs(new), _seed_bpbs(old)
    res = welch_one_sided(a, b)
    assert round(res.p, 3) == readme_p
    assert res.p == pytest.approx(sps.ttest_ind(a, b, equal_var=False, alternative="less").pvalue, abs=1e-12)
    # Student's t gives a different number (rules.md: this rules it out)
    student = sps.ttest_ind(a, b, equal_var=True, alternative="less").pvalue
    assert round(student, 3) != readme_p
    assert res.delta < 0 and res.n_new == len(a) and res.n_old == len(b)


@needs_fixtures
def test_readme_p_value_1529_vs_1514():
    """#1529 has no folder among the fixtures: its seeds come from its PR README (cited in
    scripts/build_frontier.py); #1514's come from the fixture folder. README: p = 0.001."""
    from rules.frontier import load_frontier
    front = load_frontier()
    new, old = front.by_pr(1529), front.by_pr(1514)
    assert len(new.seeds) == 3 and "PR #1529" in new.seeds_source
    assert sorted(old.seeds) == pytest.approx(sorted(_seed_bpbs("2026-04-09_A2_Muon097_3Seed")), abs=1e-6)
    res = welch_one_sided(new.seeds, old.seeds)
    assert round(res.p, 3) == 0.001
    assert res.p == pytest.approx(sps.ttest_ind(new.seeds, old.seeds, equal_var=False,
                                                alternative="less").pvalue, abs=1e-12)


def test_welch_equals_scipy_on_random_inputs():
    rng = random.Random(1234)
    for _ in range(400):
        n, m = rng.randint(2, 9), rng.randint(2, 9)
        new = [rng.gauss(rng.uniform(-1, 1), rng.uniform(1e-4, 2)) for _ in range(n)]
        old = [rng.gauss(rng.uniform(-1, 1), rng.uniform(1e-4, 2)) for _ in range(m)]
        margin = rng.choice([0.0, rng.uniform(0, 0.5)])
        ours = welch_one_sided(new, old, margin)
        ref = sps.ttest_ind(new, [x - margin for x in old], equal_var=False, alternative="less")
        assert ours.p == pytest.approx(ref.pvalue, abs=1e-9)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)


def test_t_cdf_and_incomplete_beta_match_scipy():
    rng = random.Random(7)
    for _ in range(300):
        df = rng.uniform(0.5, 60)
        t = rng.uniform(-12, 12)
        assert student_t_cdf(t, df) == pytest.approx(sps.t.cdf(t, df), abs=1e-12)
        a, b, x = rng.uniform(0.1, 30), rng.uniform(0.1, 30), rng.random()
        assert betainc_regularized(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-12)
    assert student_t_cdf(math.inf, 3) == 1.0 and student_t_cdf(-math.inf, 3) == 0.0
    assert student_t_cdf(0.0, 5) == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy warns on the flat sample
def test_degenerate_inputs_do_not_crash():
    one = welch_one_sided([1.0], [1.1, 1.2, 1.3])
    assert one.p is None and "at least 2" in one.reason and one.mean_new == 1.0
    empty = welch_one_sided([], [])
    assert empty.p is None and empty.delta is None
    flat = welch_one_sided([1.0, 1.0, 1.0], [1.1, 1.1])
    assert flat.p is None and "zero variance" in flat.reason
    one_flat = welch_one_sided([1.0, 1.0, 1.0], [1.1, 1.2, 1.3])   # only one side flat: well defined
    ref = sps.ttest_ind([1.0, 1.0, 1.0], [1.1, 1.2, 1.3], equal_var=False, alternative="less").pvalue
    assert one_flat.p == pytest.approx(ref, abs=1e-12)
    nan = welch_one_sided([1.0, float("nan")], [1.0, 2.0])
    assert nan.p is None and "NaN" in nan.reason


def test_mean_std_and_margin_conversion():
    assert mean([1, 2, 3]) == 2
    assert sample_std([1, 2, 3]) == pytest.approx(1.0)
    assert sample_std([5]) is None
    with pytest.raises(ValueError):
        mean([])
    # SP1024 baseline: val_loss 2.07269931 / val_bpb 1.22436570 -> 1.693 nats per bpb
    ratio = nats_per_bpb(2.07269931, 1.2243657)
    assert ratio == pytest.approx(1.6929, abs=1e-4)
    assert margin_bpb(0.005, ratio) == pytest.approx(0.00295, abs=1e-5)
    assert nats_per_bpb(None, 1.2) is None and nats_per_bpb(2.0, 0) is None
    assert margin_bpb(0.005, None) is None
    # a margin makes the same data less significant
    new, old = [1.060, 1.061, 1.062], [1.064, 1.065, 1.066]
    assert welch_one_sided(new, old, 0.003).p > welch_one_sided(new, old).p
