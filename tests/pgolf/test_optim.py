"""Schedules of pipeline.md §4.2/§4.5 and the optimizer groups of §4.1."""
from __future__ import annotations

import pytest
import torch

from pgolf.config import Config
from pgolf.model import GPT
from pgolf.optim import Muon, build_optimizers, lr_scale, muon_momentum


def test_momentum_warmup():
    cfg = Config()
    assert muon_momentum(0, cfg) == pytest.approx(0.92)
    assert muon_momentum(750, cfg) == pytest.approx(0.955)
    assert muon_momentum(1500, cfg) == pytest.approx(0.99) and muon_momentum(9000, cfg) == pytest.approx(0.99)


def test_step_based_warmdown():
    cfg = Config(iterations=600, warmdown_iters=200)
    assert lr_scale(399, 0, cfg, None) == 1.0
    assert lr_scale(400, 0, cfg, None) == pytest.approx(1.0)
    assert lr_scale(500, 0, cfg, None) == pytest.approx(0.5)
    assert lr_scale(599, 0, cfg, None) == pytest.approx(1 / 200)
    assert lr_scale(10, 0, Config(warmdown_iters=0), None) == 1.0


def test_wallclock_warmdown():
    cfg = Config()  # 3500-step warmdown estimated from the average step time
    cap = 586_000.0
    # 87.2 ms/step: warmdown starts when the remaining time drops under 3500 * 87.2 ms
    assert lr_scale(3000, 3000 * 87.2, cfg, cap) == 1.0
    step = 5000
    elapsed = step * 87.2
    assert lr_scale(step, elapsed, cfg, cap) == pytest.approx((cap - elapsed) / (3500 * 87.2))
    assert lr_scale(step, cap + 10, cfg, cap) == 0.0


def test_record_groups():
    with torch.device("meta"):
        record = GPT(Config())
    _, _, rec_scal = build_optimizers(record, Config())
    assert len(rec_scal.param_groups[0]["params"]) == 52  # §4.1: the record's scalar group
    model = GPT(Config.tiny())
    muon, tok, scal = build_optimizers(model, Config.tiny())
    assert isinstance(muon, Muon) and len(muon.order) == 4
    assert [p.numel() for p in muon.order] == sorted((p.numel() for p in muon.order), reverse=True)
    assert len(tok.param_groups) == 3 and all(g["lr"] == 0.035 for g in tok.param_groups)
    named = {id(p): n for n, p in model.named_parameters()}
    scalars = {named[id(p)] for p in scal.param_groups[0]["params"]}
    assert len(scalars) == 8 + 4 * 4  # 8 model-level tensors + 4 per block (record: 8 + 44 = 52)
    assert "bigram.proj.weight" in scalars and "ve_shared.proj.weight" in scalars
    assert scal.param_groups[0]["weight_decay"] == 0.04
