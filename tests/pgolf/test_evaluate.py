"""Standard and sliding-window evaluation: equivalences, the tail-duplicate quirk, the byte math."""
from __future__ import annotations

import math

import pytest
import torch

from pgolf import evaluate
from pgolf.bpb import ByteLUTs

V = 64


def _luts() -> ByteLUTs:
    g = torch.Generator().manual_seed(0)
    base = torch.randint(1, 5, (V,), generator=g).to(torch.int16)
    space = torch.rand(V, generator=g) < 0.4
    boundary = torch.zeros(V, dtype=torch.bool)
    boundary[:2] = True  # ids 0, 1 are control tokens: no bytes, and they suppress the next token's space
    base[:2] = 0
    space[:2] = False
    return ByteLUTs(base, space, boundary)


def _tokens(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(2, V, (n,), generator=g)
    t[::37] = 1  # document starts (BOS)
    return t.to(torch.int32)


@pytest.fixture(scope="module")
def tiny_model():
    model_mod = pytest.importorskip("pgolf.model")
    from pgolf.config import Config

    cfg = Config.tiny(vocab_size=V, num_layers=2, xsa_last_n=2, ve_layers="1", train_seq_len=32, eval_seq_len=32,
                      val_batch_size=8 * 32 * 3, bigram_vocab_size=32)
    torch.manual_seed(0)
    model = model_mod.build_model(cfg).float()  # fp32 on the CPU: comparisons are about logic, not rounding
    with torch.no_grad():  # make the blocks do something (output projections start at zero)
        model.qo_bank[cfg.num_layers:].normal_(0, 0.05)
        model.mlp_down_bank.normal_(0, 0.05)
    model.eval()
    return model, cfg


def test_sliding_with_stride_equal_to_window_is_the_standard_eval(tiny_model):
    model, cfg = tiny_model
    T = cfg.eval_seq_len
    val = _tokens(7 * T + 1)
    std = evaluate.standard_eval(model, val, _luts(), cfg)
    sl = evaluate.sliding_window_eval(model.forward_logits, val, _luts(), T, T, batch_seqs=3, device="cpu")
    assert sl[0] == pytest.approx(std[0], rel=1e-5)
    assert sl[1] == pytest.approx(std[1], rel=1e-5)


def test_scorer_padding_and_rank_split_do_not_change_the_result(tiny_model):
    model, cfg = tiny_model
    T, stride = cfg.eval_seq_len, 8
    val = _tokens(5 * T + 1, seed=2)
    luts = _luts()
    plain = evaluate.sliding_window_eval(model.forward_logits, val, luts, T, stride, batch_seqs=1, device="cpu")
    scorer = evaluate.model_scorer(model, compile=False)
    split = evaluate.sliding_window_eval(scorer, val, luts, T, stride, batch_seqs=7, device="cpu")
    assert split == pytest.approx(plain, rel=1e-5)
    sums = torch.zeros(3, dtype=torch.float64)
    for r in range(3):  # the three ranks' local sums add up to the single-process sums
        evaluate.sliding_window_eval(scorer, val, luts, T, stride, batch_seqs=4, rank=r, world=3, device="cpu",
                                     sums_out=sums)
    loss = sums[0].item() / sums[1].item()
    assert loss == pytest.approx(plain[0], rel=1e-5)
    assert sums[1].item() == evaluate.expected_scored_count(val.numel() - 1, T, stride)


def test_tail_windows_rescore_the_last_stride_targets():
    T, stride = 32, 8
    total = 5 * T
    n = evaluate.expected_scored_count(total, T, stride)
    assert n == total + stride * (T // stride - 1)  # the last `stride` targets counted T/stride times
    assert evaluate.expected_scored_count(62_021_632, 2048, 64) == 62_023_616  # the record's figure
    assert evaluate.scored_range(total - stride, total, T, stride) == (0, stride)
    assert evaluate.scored_range(0, total, T, stride) == (0, T)
    assert evaluate.scored_range(stride, total, T, stride) == (T - stride, T)


def test_bpb_counts_bytes_per_scored_target_including_tail_duplicates():
    """Uniform logits make every nll = ln V, so bpb exposes the exact token and byte counts."""
    T, stride = 32, 8
    val = _tokens(4 * T + 1, seed=3)
    luts = _luts()
    total = val.numel() - 1
    loss, bpb = evaluate.sliding_window_eval(lambda x: torch.zeros(*x.shape, V), val, luts, T, stride,
                                             batch_seqs=5, device="cpu")
    tokens = byte_sum = 0
    for ws in range(0, total, stride):  # hand count from the spec's rules
        s, e = evaluate.scored_range(ws, total, T, stride)
        for p in range(ws + s, ws + e):
            prev, tgt = int(val[p]), int(val[p + 1])
            byte_sum += int(luts.base_bytes[tgt]) + int(bool(luts.has_leading_space[tgt]) and not bool(luts.is_boundary[prev]))
            tokens += 1
    assert loss == pytest.approx(math.log(V), rel=1e-6)
    assert bpb == pytest.approx(tokens * math.log(V) / (math.log(2) * byte_sum), rel=1e-7)


def test_standard_eval_restores_training_mode(tiny_model):
    model, cfg = tiny_model
    model.train()
    evaluate.standard_eval(model, _tokens(2 * cfg.eval_seq_len + 1), _luts(), cfg)
    assert model.training
    model.eval()
