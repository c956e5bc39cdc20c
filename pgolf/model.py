"""The record's GPT (pipeline.md §3): banked matrices, BigramHash, SmearGate, partial RoPE, XSA,
LeakyReLU(0.5)^2 MLP, value embeddings, U-Net skips, tied soft-capped head.

All large matrices live in four 3-D "banks" owned by the GPT (not by the blocks) so that Muon can
orthogonalize same-shape matrices in one batched call; blocks receive their slices at forward time.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_attention
from .config import Config

BIGRAM_MUL_CUR, BIGRAM_MUL_PREV = 36313, 27191


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm; eps=None means fp32 machine epsilon, as in the record."""
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """fp32 master weight, cast to the activation dtype at the matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


def rope_tables(T: int, rope_dims: int, base: float, device, dtype, ref_len: int = 1024):
    """cos/sin [1, T, 1, rd/2] in fp32, cast to dtype. The record's NTK quirk: reference length 1024;
    for T > 1024 the base becomes base·(T/1024)^(rd/(rd-2)) (= 10000·2^(8/7) at T=2048).
    Computed per forward (a few thousand values) rather than cached, so compiled graphs stay pure."""
    if T > ref_len:
        base = base * (T / ref_len) ** (rope_dims / (rope_dims - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32, device=device) / rope_dims))
    ang = torch.outer(torch.arange(T, dtype=torch.float32, device=device), inv_freq)
    return ang.cos()[None, :, None, :].to(dtype), ang.sin()[None, :, None, :].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rd: int) -> torch.Tensor:
    """Rotate dims [0, rd) of each head: halves a, b -> [a·cos + b·sin, −a·sin + b·cos]."""
    xr, xp = x[..., :rd], x[..., rd:]
    a, b = xr[..., : rd // 2], xr[..., rd // 2:]
    return torch.cat((a * cos + b * sin, b * cos - a * sin, xp), dim=-1)


class BigramHash(nn.Module):
    """Hashed (previous, current) token pair embedding; bucket V_b-1 means 'no previous token'."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(dim, model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def bucket_ids(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.int32)
        mixed = torch.bitwise_xor(BIGRAM_MUL_CUR * x32[:, 1:], BIGRAM_MUL_PREV * x32[:, :-1]) % (self.buckets - 1)
        first = torch.full_like(x32[:, :1], self.buckets - 1)  # position 0 of every window
        return torch.cat((first, mixed), dim=1).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.embed(self.bucket_ids(x)))
        return h * self.scale.to(h.dtype)


class SmearGate(nn.Module):
    """x_t <- (1-g)·x_t + g·x_{t-1}, g = sigmoid(gate) per channel, x_{-1} = 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        return (1 - g) * x + g * prev


class ValueEmbedding(nn.Module):
    """One shared table + projection; computed once per forward, added to V on the VE layers."""

    def __init__(self, vocab: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = CastedLinear(dim, kv_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.embed(x))
        return h * self.scale.to(h.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: Config, xsa: bool):
        super().__init__()
        self.h, self.hkv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.rd = cfg.rope_dims or cfg.head_dim
        self.xsa = xsa
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))

    def forward(self, h, wq, wk, wv, wo, rope, ve=None, hook=None, name=""):
        B, T, _ = h.shape
        dt = h.dtype
        q = F.linear(h, wq.to(dt)).view(B, T, self.h, self.d)
        k = F.linear(h, wk.to(dt)).view(B, T, self.hkv, self.d)
        v = F.linear(h, wv.to(dt))
        if ve is not None:
            v = v + ve
        v = v.view(B, T, self.hkv, self.d)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v)
        if self.xsa:
            y = exclusive_self_attention(y, v)
        y = y.reshape(B, T, self.h * self.d)
        if hook is not None:
            hook(f"{name}.attn.proj", y)
        return F.linear(y, wo.to(y.dtype))


def exclusive_self_attention(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Remove from each head's output its component along the token's own (unit) value vector."""
    B, T, H, D = y.shape
    g = v.size(2)
    vn = F.normalize(v, dim=-1).unsqueeze(3)  # [B,T,Hkv,1,D]
    yg = y.view(B, T, g, H // g, D)
    return (yg - (yg * vn).sum(-1, keepdim=True) * vn).view(B, T, H, D)


class MLP(nn.Module):
    def __init__(self, negative_slope: float):
        super().__init__()
        self.slope = negative_slope

    def forward(self, h, w_up, w_down, hook=None, name=""):
        a = F.leaky_relu(F.linear(h, w_up.to(h.dtype)), self.slope).square()
        if hook is not None:
            hook(f"{name}.mlp.proj", a)
        return F.linear(a, w_down.to(a.dtype))


class Block(nn.Module):
    def __init__(self, cfg: Config, layer: int):
        super().__init__()
        d = cfg.model_dim
        self.name = f"blocks.{layer}"
        self.s = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.attn = Attention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg.negative_slope)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))

    def forward(self, x, x0, w, rope, ve=None, hook=None):
        dt = x.dtype
        mix = self.resid_mix.to(dt)
        x_in = mix[0] * x + mix[1] * x0
        h = rms_norm(x_in) * self.s
        if hook is not None:
            hook(f"{self.name}.attn.c_q", h)
        x_mid = x_in + self.attn_scale.to(dt) * self.attn(h, w[0], w[1], w[2], w[3], rope, ve, hook, self.name)
        h2 = rms_norm(x_mid) * self.s
        if hook is not None:
            hook(f"{self.name}.mlp.fc", h2)
        return x_mid + self.mlp_scale.to(dt) * self.mlp(h2, w[4], w[5], hook, self.name)


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        L, d, V = cfg.num_layers, cfg.model_dim, cfg.vocab_size
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.cfg = cfg
        self.softcap = cfg.logit_softcap
        self.rope_dims = cfg.rope_dims or cfg.head_dim
        self.hessian_hook = None  # set by quant.collect_hessians: called as hook(name, tensor)
        # Construction order = RNG consumption order of the record (§3.11).
        self.tok_emb = nn.Embedding(V, d)
        self.bigram = BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, d) if cfg.bigram_vocab_size > 0 else None
        self.smear = SmearGate(d)
        self.num_encoder = L // 2
        self.num_skip = min(self.num_encoder, L - self.num_encoder)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skip, d))
        self.qo_bank = nn.Parameter(torch.empty(2 * L, d, d))
        self.kv_bank = nn.Parameter(torch.empty(2 * L, kv_dim, d))
        self.mlp_up_bank = nn.Parameter(torch.empty(L, cfg.mlp_hidden, d))
        self.mlp_down_bank = nn.Parameter(torch.empty(L, d, cfg.mlp_hidden))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(L))
        self.ve_layers = cfg.ve_layer_list
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(V, cfg.ve_dim, kv_dim)
            self.ve_layer_scales = nn.ParameterList(nn.Parameter(torch.ones(1)) for _ in self.ve_layers)
        else:
            self.ve_shared = None
        self._init_weights(cfg)

    @torch.no_grad()
    def _init_weights(self, cfg: Config) -> None:
        if self.qo_bank.is_meta:  # meta-device build (parameter counting): nothing to initialize
            return
        L = cfg.num_layers
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        for i in range(L):
            nn.init.orthogonal_(self.qo_bank.data[i])
            self.qo_bank.data[L + i].zero_()
            nn.init.orthogonal_(self.kv_bank.data[i])
            nn.init.orthogonal_(self.kv_bank.data[L + i])
            nn.init.orthogonal_(self.mlp_up_bank.data[i])
            self.mlp_down_bank.data[i].zero_()
        # the record's "projection scale" 1/sqrt(2L) on Wo/Wdown: they are zero, so it is a no-op.
        for m in self.modules():  # large linear layers get orthogonal init, overriding their zero init
            if isinstance(m, nn.Linear) and min(m.weight.shape) >= 64:
                nn.init.orthogonal_(m.weight)

    def layer_weights(self, i: int) -> tuple[torch.Tensor, ...]:
        """Per-layer (Wq, Wk, Wv, Wo, Wup, Wdown) slices of the banks. (Casting each bank once and
        unbinding it was measured: same step time on H100, +200 MiB peak memory; see bench/RESULTS.md.)"""
        L = len(self.blocks)
        return (self.qo_bank[i], self.kv_bank[i], self.kv_bank[L + i], self.qo_bank[L + i],
                self.mlp_up_bank[i], self.mlp_down_bank[i])

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalized hidden state [B, T, d] (the activation dtype)."""
        hook = self.hessian_hook
        e = self.tok_emb(x)
        if self.bigram is not None:
            e = e + self.bigram(x)
        h = self.smear(rms_norm(e))
        x0 = h
        rope = rope_tables(x.size(1), self.rope_dims, self.cfg.rope_base, x.device, h.dtype)
        ve = self.ve_shared(x) if self.ve_shared is not None else None
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder:
                j = i - self.num_encoder
                if j < self.num_skip:
                    h = h + self.skip_weights[j].to(h.dtype) * skips.pop()
            ve_i = None
            if ve is not None and i in self.ve_layers:
                ve_i = ve * self.ve_layer_scales[self.ve_layers.index(i)].to(ve.dtype)
            h = block(h, x0, self.layer_weights(i), rope, ve_i, hook)
            if i < self.num_encoder:
                skips.append(h)
        return rms_norm(h)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Soft-capped fp32 logits [B, T, V]."""
        z = self.hidden(x)
        logits = F.linear(z, self.tok_emb.weight.to(z.dtype)).float()
        return self.softcap * torch.tanh(logits / self.softcap)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean fp32 cross entropy over all B·T targets."""
        logits = self.forward_logits(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


# ---------------------------------------------------------------------------------------------
def is_control(name: str, patterns) -> bool:
    return any(p in name for p in patterns)


def apply_dtype_treatment(model: GPT) -> GPT:
    """§3.10: everything to bf16, then banks, small projections, 1-D and control params back to fp32.
    Embedding tables stay bf16. Every initial value is therefore bf16-representable."""
    model.bfloat16()
    patterns = model.cfg.control_patterns
    for name, p in model.named_parameters():
        if (p.ndim != 2 or name.endswith("proj.weight") or is_control(name, patterns)) and not name.endswith(
            "embed.weight") and name != "tok_emb.weight":
            p.data = p.data.float()
    return model


def build_model(cfg: Config, device="cpu") -> GPT:
    """Build on the CPU (so the init RNG stream is device-independent), move, apply §3.10."""
    model = GPT(cfg)
    return apply_dtype_treatment(model.to(device))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
