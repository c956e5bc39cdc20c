"""GPTQ, the int6/int8 quantizers, routing, Hessian capture and the bank layout."""
from __future__ import annotations

import pytest
import torch

from pgolf import quant


def _layer(rows: int, cols: int, seed: int, n: int = 3000):
    """A weight and the finalized Hessian of strongly correlated inputs (where GPTQ should shine)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5
    X = torch.randn(n, cols, generator=g) @ mix + 0.2 * torch.randn(n, cols, generator=g)
    H = quant.finalize_hessian(X.T @ X, n)
    W = 0.02 * torch.randn(rows, cols, generator=g) * torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    W[:, 5] *= 6  # an outlier column: act-order and the clip search have something to do
    return W, H


def _hessian_error(W, H, q, s):
    D = W - q.float() * s.float()[:, None]
    return torch.einsum("rc,cd,rd->", D, H, D).item()


def test_gptq_beats_round_to_nearest_on_the_hessian_metric():
    W, H = _layer(64, 192, seed=1)
    q, s = quant.gptq_reference(W, H)
    qn, sn = quant.quantize_int6_rows(W)
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    assert int(q.abs().max()) <= 31
    assert _hessian_error(W, H, q, s) < 0.8 * _hessian_error(W, H, qn, sn)


def test_batched_gptq_equals_reference_on_cpu():
    # several shapes in one call, a width that is not a multiple of the 128-column block, and a dead input
    layers = [_layer(48, 160, 2), _layer(48, 160, 3), _layer(32, 96, 4), _layer(80, 160, 5)]
    W, H = layers[1]
    H[7, :] = 0
    H[:, 7] = 0
    Ws, Hs = [w for w, _ in layers], [h for _, h in layers]
    got = quant.gptq_quantize_batch(Ws, Hs, device="cpu")
    for (w, h), (q, s) in zip(layers, got):
        q_ref, s_ref = quant.gptq_reference(w, h)
        assert torch.equal(s, s_ref)
        assert torch.equal(q, q_ref)


def test_gptq_single_matrix_entry_point_and_dead_column():
    W, H = _layer(16, 64, 6)
    H[3, :] = 0
    H[:, 3] = 0
    q, s = quant.gptq_quantize_matrix(W, H, device="cpu")
    assert q.shape == W.shape and s.shape == (16,)
    assert torch.equal(q[:, 3], torch.zeros(16, dtype=torch.int8))  # dead inputs are zeroed, not quantized


def test_gptq_falls_back_to_rows_when_cholesky_fails():
    W, _ = _layer(8, 32, 7)
    H = -torch.eye(32)  # not positive definite
    q, s = quant.gptq_quantize_batch([W], [H], device="cpu")[0]
    qn, sn = quant.quantize_int6_rows(W)
    assert torch.equal(q, qn) and torch.equal(s, sn)


def test_int6_rows_picks_lowest_mse_candidate():
    g = torch.Generator().manual_seed(8)
    W = torch.randn(10, 300, generator=g)
    W[0, 0] = 40.0  # one huge outlier: clipping it beats scaling the whole row for it
    q, s = quant.quantize_int6_rows(W)
    errs = []
    for clip in quant.clip_candidates(W):
        sc = quant.scales_from_clip(clip, 31).float()
        qq = torch.clamp(torch.round(W / sc[:, None]), -31, 31)
        errs.append((W - qq * sc[:, None]).pow(2).mean().item())
    mse = (W - q.float() * s.float()[:, None]).pow(2).mean().item()
    assert mse == pytest.approx(min(errs), rel=1e-6)
    assert min(errs) < errs[-1]  # the row max is not the best choice here


def test_int8_rows_error_bounded_by_half_step():
    g = torch.Generator().manual_seed(9)
    E = torch.randn(100, 64, generator=g)
    q, s = quant.quantize_int8_rows(E)
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    rec = q.float() * s.float()[:, None]
    clip = torch.quantile(E.abs(), quant.INT8_CLIP_QUANTILE, dim=1)
    inside = E.abs() <= clip[:, None]
    # fp16 storage of the scale adds a relative 2^-11 on top of the half-step rounding error
    bound = (0.5 * s.float() + 127 * s.float() * 2 ** -10)[:, None].expand_as(E)
    assert ((rec - E).abs()[inside] <= bound[inside]).all()


def test_routing_rules():
    big = torch.zeros(300, 300)
    assert quant.route("blocks.0.attn.c_q.weight", big) == "int6"
    assert quant.route("blocks.3.mlp.proj.weight", big) == "int6"
    assert quant.route("tok_emb.weight", big) == "int8"
    assert quant.route("bigram.embed.weight", big) == "int8"
    assert quant.route("blocks.0.attn.c_q.weight", torch.zeros(64, 64)) == "passthrough"  # ≤ 65,536 elements
    assert quant.route("blocks.0.attn_scale", torch.zeros(512)) == "passthrough"
    assert quant.route("steps", torch.zeros(100000, dtype=torch.int64)) == "passthrough"  # not float
    assert quant.route("blocks.0.resid_mix_big", big) == "passthrough_ctrl"


def test_unbank_rebank_inverse_any_dims():
    L, d, kv, hid = 3, 24, 8, 40
    g = torch.Generator().manual_seed(10)
    sd = {
        "tok_emb.weight": torch.randn(50, d, generator=g).bfloat16(),
        "qo_bank": torch.randn(2 * L, d, d, generator=g),
        "kv_bank": torch.randn(2 * L, kv, d, generator=g),
        "mlp_up_bank": torch.randn(L, hid, d, generator=g),
        "mlp_down_bank": torch.randn(L, d, hid, generator=g),
        "blocks.0.q_gain": torch.randn(4, generator=g),
    }
    un = quant.unbank_state_dict(sd, L)
    assert torch.equal(un["blocks.2.attn.proj.weight"], sd["qo_bank"][L + 2])
    assert torch.equal(un["blocks.1.attn.c_v.weight"], sd["kv_bank"][L + 1])
    assert torch.equal(un["blocks.0.mlp.proj.weight"], sd["mlp_down_bank"][0])
    assert len(un) == len(sd) - 4 + 6 * L
    back = quant.rebank_state_dict(un, L, sd)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k])
    with pytest.raises(ValueError):
        quant.unbank_state_dict(sd, L + 1)


def test_quantize_state_dict_round_trip():
    g = torch.Generator().manual_seed(11)
    W, H = _layer(384, 256, 12)
    W = W * 100  # above the 1/31 scale floor, so the round trip is informative
    sd = {
        "tok_emb.weight": torch.randn(1024, 80, generator=g).bfloat16(),
        "blocks.0.attn.c_q.weight": W,
        "blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=g) * 2.0,  # no Hessian -> row fallback
        "blocks.0.attn_scale": torch.rand(256, generator=g),
    }
    q, meta, stats = quant.quantize_state_dict(sd, {"blocks.0.attn.c_q.weight": H}, device="cpu")
    assert stats["gptq_layers"] == 1 and stats["naive_layers"] == 1
    assert meta == {"tok_emb.weight": {"type": "int8"}, "blocks.0.attn.c_q.weight": {"type": "int6"},
                    "blocks.0.mlp.fc.weight": {"type": "int6"}, "blocks.0.attn_scale": "passthrough"}
    assert q["blocks.0.attn_scale"].dtype == torch.float16
    q_ref, _ = quant.gptq_reference(W, H)
    assert torch.equal(q["blocks.0.attn.c_q.weight.q"], q_ref)
    deq = quant.dequantize_state_dict(q, meta, sd)
    exact = q_ref.float() * q["blocks.0.attn.c_q.weight.scale"].float()[:, None]
    assert torch.equal(deq["blocks.0.attn.c_q.weight"], exact)  # GPTQ error is small in H-norm, not in L2
    for k, t in sd.items():
        assert deq[k].dtype == t.dtype and deq[k].shape == t.shape
        if k == "blocks.0.attn.c_q.weight":
            continue
        rel = (deq[k].float() - t.float()).norm() / t.float().norm()
        assert rel < 0.05, k
    with pytest.raises(KeyError):
        quant.dequantize_state_dict(q, {}, sd)


def test_collect_hessians_on_the_model():
    model_mod = pytest.importorskip("pgolf.model")
    from pgolf.config import Config

    cfg = Config.tiny(num_layers=2, xsa_last_n=2, ve_layers="1")
    torch.manual_seed(0)
    model = model_mod.build_model(cfg)
    g = torch.Generator().manual_seed(13)
    batches = [(torch.randint(0, cfg.vocab_size, (2, 32), generator=g),) * 2 for _ in range(2)]
    Hs = quant.collect_hessians(model, batches, "cpu", autocast_dtype=None)
    assert len(Hs) == 6 * cfg.num_layers
    assert model.hessian_hook is None  # restored
    assert Hs["blocks.0.attn.c_q.weight"] is Hs["blocks.0.attn.c_v.weight"]
    assert Hs["blocks.1.mlp.proj.weight"].shape == (cfg.mlp_hidden, cfg.mlp_hidden)
    # independent check of the first layer's attention-input Hessian: capture the input ourselves
    seen = []
    model.hessian_hook = lambda name, x: seen.append(x.reshape(-1, x.shape[-1]).float()) if name == "blocks.0.attn.c_q" else None
    with torch.no_grad():
        for x, y in batches:
            model(x, y)
    model.hessian_hook = None
    manual = sum(X.T @ X for X in seen) / len(batches)
    manual.diagonal().add_(0.01 * manual.diagonal().mean())
    torch.testing.assert_close(Hs["blocks.0.attn.c_q.weight"], manual, rtol=1e-4, atol=1e-5)
