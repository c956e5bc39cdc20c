"""Hardware calibration: the expectation's scaling, the log reading, and a real short pgolf run."""
from __future__ import annotations

import pytest

from worker.calibration import (RECORD_MS_PER_STEP, RECORD_PARAMS, RECORD_TOKENS_PER_STEP, calibrate,
                                expected_ms_per_step, parse_calibration_log)


def test_expected_step_time_scales_with_compute_and_gpus():
    assert expected_ms_per_step(RECORD_PARAMS, RECORD_TOKENS_PER_STEP, 8) == pytest.approx(RECORD_MS_PER_STEP)
    assert expected_ms_per_step(RECORD_PARAMS, RECORD_TOKENS_PER_STEP, 1) == pytest.approx(8 * RECORD_MS_PER_STEP)
    half = expected_ms_per_step(RECORD_PARAMS // 2, RECORD_TOKENS_PER_STEP, 8)
    assert half == pytest.approx(RECORD_MS_PER_STEP / 2, rel=1e-6)


def test_parse_skips_the_first_steps():
    lines = ["model_params:27038812", "warmup_step:1/2",
             "step:1/10 train_loss:6.9 train_time:131ms step_avg:131.00ms",
             "step:2/10 train_loss:6.0 train_time:216ms step_avg:108.00ms",
             "step:3/10 train_loss:5.0 train_time:302ms step_avg:100.67ms",
             "step:10/10 train_loss:4.0 train_time:912ms step_avg:91.20ms",
             "step:10/10 val_loss:4.0 val_bpb:2.0 train_time:912ms step_avg:91.20ms"]
    out = parse_calibration_log(lines)
    assert out["params"] == 27038812 and out["steps"] == 4
    assert out["ms_per_step"] == pytest.approx((912 - 302) / 7, rel=1e-3)


@pytest.mark.slow
def test_short_pgolf_run_on_this_node(tmp_path):
    pgolf_bench = pytest.importorskip("pgolf.bench")
    data, tok = pgolf_bench.make_corpus(tmp_path / "corpus")
    out = calibrate(data, tok, steps=5, env={"VOCAB_SIZE": "320"}, timeout_s=300)
    assert out["status"] in ("ok", "stopped"), out
    assert out["params"] and out["ms_per_step"] > 0 and out["expected_ms_per_step"] > 0
    # a CPU node is far slower than 8xH100 for the same compute: it must be named slow
    assert out["factor"] > 1.1 and out["node"]


def test_calibration_without_data_explains(tmp_path):
    out = calibrate(tmp_path / "none")
    assert "error" in out and "factor" not in out
