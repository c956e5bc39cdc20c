"""The GPT of pipeline.md §3: parameter count, a plain float64 re-derivation of the forward pass,
XSA, RoPE sign convention, init and dtypes, the Hessian hook contract."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import Config
from pgolf.model import GPT, apply_rope, build_model, count_params, exclusive_self_attention, rope_tables
from pgolf.optim import build_optimizers, newton_schulz5


def test_record_param_count_on_meta():
    with torch.device("meta"):
        model = GPT(Config())
    assert count_params(model) == 27_038_812
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["qo_bank"] == (22, 512, 512) and shapes["kv_bank"] == (22, 256, 512)
    assert shapes["mlp_up_bank"] == (11, 1536, 512) and shapes["mlp_down_bank"] == (11, 512, 1536)
    assert shapes["bigram.embed.weight"] == (2816, 112) and shapes["ve_shared.proj.weight"] == (256, 128)


# ---------------------------------------------------------------------------------------------
def plain_forward_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The §3 forward written out plainly in float64: loops over heads, explicit masks, no helpers."""
    cfg = model.cfg
    P = {n: p.detach().double() for n, p in model.named_parameters()}
    B, T = x.shape
    L, d, H, Hkv, D = cfg.num_layers, cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    rd = cfg.rope_dims

    def rms(t):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)

    e = P["tok_emb.weight"][x]
    vb = cfg.bigram_vocab_size
    buckets = torch.full((B, T), vb - 1, dtype=torch.long)
    for t in range(1, T):
        buckets[:, t] = ((36313 * x[:, t]) ^ (27191 * x[:, t - 1])) % (vb - 1)
    e = e + P["bigram.scale"] * (P["bigram.embed.weight"][buckets] @ P["bigram.proj.weight"].T)
    h = rms(e)
    g = torch.sigmoid(P["smear.gate"])
    h = torch.stack([(1 - g) * h[:, t] + g * (h[:, t - 1] if t else 0 * h[:, 0]) for t in range(T)], dim=1)
    x0 = h
    ve = P["ve_shared.scale"] * (P["ve_shared.embed.weight"][x] @ P["ve_shared.proj.weight"].T)
    base = cfg.rope_base * ((T / 1024) ** (rd / (rd - 2)) if T > 1024 else 1.0)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    ang = pos * base ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)[None]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(v):  # v [B, T, D]
        a, b = v[..., : rd // 2], v[..., rd // 2: rd]
        return torch.cat([a * cos + b * sin, -a * sin + b * cos, v[..., rd:]], dim=-1)

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    skips = []
    for i in range(L):
        if i >= L // 2 and i - L // 2 < L // 2:
            h = h + P["skip_weights"][i - L // 2] * skips.pop()
        pre = f"blocks.{i}."
        s = 1 / math.sqrt(i + 1)
        x_in = P[pre + "resid_mix"][0] * h + P[pre + "resid_mix"][1] * x0
        a_in = rms(x_in) * s
        q = a_in @ P["qo_bank"][i].T
        k = a_in @ P["kv_bank"][i].T
        v = a_in @ P["kv_bank"][L + i].T
        if i in cfg.ve_layer_list:
            v = v + ve * P[f"ve_layer_scales.{cfg.ve_layer_list.index(i)}"]
        heads = []
        for hh in range(H):
            gk = hh // (H // Hkv)
            qh = rope(rms(q[..., hh * D:(hh + 1) * D])) * P[pre + "attn.q_gain"][hh]
            kh = rope(rms(k[..., gk * D:(gk + 1) * D]))
            vh = v[..., gk * D:(gk + 1) * D]
            att = (qh @ kh.transpose(1, 2)) / math.sqrt(D)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            yh = att @ vh
            if i >= L - cfg.xsa_last_n:
                u = vh / vh.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                yh = yh - (yh * u).sum(-1, keepdim=True) * u
            heads.append(yh)
        attn = torch.cat(heads, -1) @ P["qo_bank"][L + i].T
        x_mid = x_in + P[pre + "attn_scale"] * attn
        m_in = rms(x_mid) * s
        act = F.leaky_relu(m_in @ P["mlp_up_bank"][i].T, cfg.negative_slope) ** 2
        h = x_mid + P[pre + "mlp_scale"] * (act @ P["mlp_down_bank"][i].T)
        if i < L // 2:
            skips.append(h)
    logits = rms(h) @ P["tok_emb.weight"].T
    logits = cfg.logit_softcap * torch.tanh(logits / cfg.logit_softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def _fp32_model(cfg: Config) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg).float()
    with torch.no_grad():  # every parameter non-trivial, so every path of the forward is exercised
        for n, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.ndim >= 2 else 0.2))
    return model


def test_forward_matches_plain_float64_reference():
    cfg = Config.tiny(num_layers=5, xsa_last_n=3, ve_layers="3,4", vocab_size=1024)
    model = _fp32_model(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 1024, (2, 40), generator=g)
    y = torch.randint(0, 1024, (2, 40), generator=g)
    got = model(x, y).item()
    ref = plain_forward_loss(model, x, y).item()
    assert got == pytest.approx(ref, rel=2e-5)


def test_one_training_step_loss_matches_reference():
    """After one real optimizer step (Muon + both AdamWs) the forward still equals the reference, and
    the loss on the step's own batch went down."""
    cfg = Config.tiny(vocab_size=1024)
    model = _fp32_model(cfg)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 1024, (2, 32), generator=g)
    y = torch.randint(0, 1024, (2, 32), generator=g)
    opts = build_optimizers(model, cfg)
    before = model(x, y)
    before.backward()
    for o in opts:
        o.step()
    after = model(x, y).item()
    assert after < before.item()
    assert after == pytest.approx(plain_forward_loss(model, x, y).item(), rel=2e-5)


def test_step0_loss_is_log_vocab_with_record_init():
    """Wo and Wdown start at zero (every block is the identity), so the first loss is ≈ ln V."""
    cfg = Config.tiny()
    model = build_model(cfg)
    L = cfg.num_layers
    assert torch.count_nonzero(model.qo_bank[L:]) == 0 and torch.count_nonzero(model.mlp_down_bank) == 0
    q0 = model.qo_bank[0].double()
    torch.testing.assert_close(q0 @ q0.T, torch.eye(q0.size(0), dtype=torch.float64), atol=2e-2, rtol=0)
    x, y = torch.randint(0, 1024, (2, 2, 64))
    assert model(x, y).item() == pytest.approx(math.log(1024), abs=0.05)


def test_dtype_treatment():
    model = build_model(Config.tiny())
    dt = {n: p.dtype for n, p in model.named_parameters()}
    for n in ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"):
        assert dt[n] == torch.bfloat16
    for n in ("qo_bank", "mlp_down_bank", "bigram.proj.weight", "ve_shared.proj.weight", "skip_weights",
              "blocks.0.resid_mix", "blocks.0.attn.q_gain", "bigram.scale"):
        assert dt[n] == torch.float32
    # every initial value is bf16-representable (the model went through bf16 wholesale)
    assert torch.equal(model.qo_bank, model.qo_bank.bfloat16().float())


def test_bigram_bucket_zero_is_reserved():
    model = GPT(Config.tiny())
    x = torch.tensor([[5, 7, 9], [5, 7, 9]])
    ids = model.bigram.bucket_ids(x)
    assert ids[:, 0].tolist() == [127, 127]  # V_b - 1 at position 0 of every window
    assert ids[0, 1].item() == ((36313 * 7) ^ (27191 * 5)) % 127


def test_xsa_removes_self_value_component():
    torch.manual_seed(0)
    y = torch.randn(2, 5, 4, 8, dtype=torch.float64)
    v = torch.randn(2, 5, 2, 8, dtype=torch.float64)
    out = exclusive_self_attention(y, v)
    u = F.normalize(v, dim=-1)
    for h in range(4):
        g = h // 2
        assert (out[:, :, h] * u[:, :, g]).sum(-1).abs().max() < 1e-12
        # only the component along the own value direction was removed
        removed = y[:, :, h] - out[:, :, h]
        cross = torch.linalg.vector_norm(torch.linalg.cross(removed[..., :3], u[:, :, g, :3]), dim=-1)
        assert torch.allclose(removed, (y[:, :, h] * u[:, :, g]).sum(-1, keepdim=True) * u[:, :, g])
        assert cross.max() < 1e-9


def test_rope_sign_convention_and_relative_positions():
    rd, D, T = 8, 12, 50
    cos, sin = rope_tables(T, rd, 10000.0, "cpu", torch.float64)
    x = torch.zeros(1, T, 1, D, dtype=torch.float64)
    x[..., 0] = 1.0  # a = e_0, b = 0
    out = apply_rope(x, cos, sin, rd)
    t = 3
    assert out[0, t, 0, 0].item() == pytest.approx(math.cos(t))  # theta_{t,0} = t
    assert out[0, t, 0, rd // 2].item() == pytest.approx(-math.sin(t))  # second half gets -a·sin
    assert torch.equal(out[..., rd:], x[..., rd:])  # unrotated dims pass through
    q = torch.randn(1, 1, 1, D, dtype=torch.float64).expand(1, T, 1, D)
    k = torch.randn(1, 1, 1, D, dtype=torch.float64).expand(1, T, 1, D)
    rq, rk = apply_rope(q, cos, sin, rd), apply_rope(k, cos, sin, rd)
    dots = (rq[0, :, 0, None] * rk[0, None, :, 0]).sum(-1)
    assert dots[10, 4].item() == pytest.approx(dots[20, 14].item())  # depends on t1 - t2 only


def test_ntk_base_quirk():
    cos_long, _ = rope_tables(2048, 16, 10000.0, "cpu", torch.float64)
    base = 10000.0 * 2 ** (8 / 7)
    assert cos_long[0, 1, 0, 1].item() == pytest.approx(math.cos(base ** (-2 / 16)))
    cos_short, _ = rope_tables(1024, 16, 10000.0, "cpu", torch.float64)
    assert cos_short[0, 1, 0, 1].item() == pytest.approx(math.cos(10000.0 ** (-2 / 16)))


def test_hessian_hook_contract():
    cfg = Config.tiny()
    model = build_model(cfg)
    seen = {}
    model.hessian_hook = lambda name, t: seen.setdefault(name, tuple(t.shape))
    x = torch.randint(0, 1024, (2, 16))
    model(x, x)
    d, hid = cfg.model_dim, cfg.mlp_hidden
    for i in range(cfg.num_layers):
        assert seen[f"blocks.{i}.attn.c_q"] == (2, 16, d)
        assert seen[f"blocks.{i}.attn.proj"] == (2, 16, d)
        assert seen[f"blocks.{i}.mlp.fc"] == (2, 16, d)
        assert seen[f"blocks.{i}.mlp.proj"] == (2, 16, hid)
    assert len(seen) == 4 * cfg.num_layers


def test_newton_schulz_orthogonalizes_batches():
    torch.manual_seed(0)
    g = torch.randn(3, 32, 96)
    out = newton_schulz5(g).float()
    sv = torch.linalg.svdvals(out)
    assert out.shape == g.shape and sv.min() > 0.5 and sv.max() < 1.3  # NS5's band around 1
    tall = newton_schulz5(g.mT).float()  # r > c is transposed internally
    torch.testing.assert_close(tall, out.mT, atol=1e-6, rtol=0)

