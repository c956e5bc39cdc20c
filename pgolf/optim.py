"""Optimizers and schedules (pipeline.md §4): Muon over the banks (sharded across ranks when
distributed), two AdamW optimizers for embeddings and scalars, the LR/momentum schedules, clipping.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from . import distributed as D
from .config import Config

NS_COEFFS = (3.4445, -4.7750, 2.0315)


@torch.no_grad()
def newton_schulz5(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Batched quintic Newton-Schulz orthogonalization in bf16 of G [n, r, c] (or [r, c])."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = x @ x.mT
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """Nesterov momentum + NS5 per bank matrix, decoupled weight decay, update scale sqrt(max(1, r/c)).

    Distributed: call `launch_reduce_scatters()` right after backward/clipping; `step()` then works
    on this rank's shard of each bank (bf16 momentum shard) and all-gathers the updates. Without a
    launch (one process, or the compile warmup) it takes the full-bank path on already-averaged grads.
    """

    def __init__(self, params, lr: float, momentum: float, backend_steps: int = 5, weight_decay: float = 0.0):
        super().__init__(list(params), dict(lr=lr, base_lr=lr, momentum=momentum, backend_steps=backend_steps,
                                            weight_decay=weight_decay))
        # descending numel, stable: mlp_up, mlp_down, qo, kv at the record shapes
        self.order = sorted([p for g in self.param_groups for p in g["params"]], key=lambda p: -p.numel())
        self._shard: dict = {}
        self._rs_handles: list | None = None

    def _shard_state(self, p: torch.Tensor) -> dict:
        if p not in self._shard:
            w = dist.get_world_size()
            n = p.size(0)
            padded = math.ceil(n / w) * w
            shard = padded // w
            dev = p.device
            self._shard[p] = dict(
                n=n, shard=shard,
                grad_pad=torch.zeros((padded,) + tuple(p.shape[1:]), dtype=torch.bfloat16, device=dev),
                grad_shard=torch.zeros((shard,) + tuple(p.shape[1:]), dtype=torch.bfloat16, device=dev),
                mom=torch.zeros((shard,) + tuple(p.shape[1:]), dtype=torch.bfloat16, device=dev),
                full=torch.zeros((padded,) + tuple(p.shape[1:]), dtype=torch.bfloat16, device=dev),
            )
        return self._shard[p]

    @torch.no_grad()
    def launch_reduce_scatters(self) -> None:
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return
        self._rs_handles = []
        for p in self.order:
            st = self._shard_state(p)
            st["grad_pad"][: st["n"]].copy_(p.grad)
            self._rs_handles.append(D.reduce_scatter_avg(st["grad_shard"], st["grad_pad"], async_op=True))

    @staticmethod
    def _scale(p: torch.Tensor) -> float:
        return math.sqrt(max(1.0, p.size(-2) / p.size(-1)))

    def _group_of(self, p: torch.Tensor) -> dict:
        # looked up every time: load_state_dict replaces the group dicts (the warmup reset does that)
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))

    @torch.no_grad()
    def _apply(self, p: torch.Tensor, update: torch.Tensor) -> None:
        g = self._group_of(p)
        lr, wd = g["lr"], g["weight_decay"]
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(update.to(p.dtype), alpha=-lr * self._scale(p))

    @torch.no_grad()
    def step(self, closure=None):
        if self._rs_handles is None:
            for p in self.order:
                if p.grad is None:
                    continue
                g = self._group_of(p)
                grad = p.grad.bfloat16()
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(grad)
                buf = st["momentum_buffer"]
                buf.mul_(g["momentum"]).add_(grad)
                u = grad.add(buf, alpha=g["momentum"])
                self._apply(p, newton_schulz5(u, g["backend_steps"]))
            return None
        pending = None  # (param, gather handle) of the previous bank: overlap its gather with this NS
        for p, h in zip(self.order, self._rs_handles):
            g, st = self._group_of(p), self._shard[p]
            h.wait()
            grad = st["grad_shard"]
            st["mom"].mul_(g["momentum"]).add_(grad)
            u = newton_schulz5(grad.add(st["mom"], alpha=g["momentum"]), g["backend_steps"])
            if pending is not None:
                pending[1].wait()
                self._apply(pending[0], self._shard[pending[0]]["full"][: self._shard[pending[0]]["n"]])
            pending = (p, D.all_gather_into(st["full"], u.contiguous(), async_op=True))
        if pending is not None:
            pending[1].wait()
            self._apply(pending[0], self._shard[pending[0]]["full"][: self._shard[pending[0]]["n"]])
        self._rs_handles = None
        return None


# ---------------------------------------------------------------------------------------------
BANK_NAMES = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
EMBED_NAMES = ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight")


def build_optimizers(model, cfg: Config) -> tuple[Muon, torch.optim.Optimizer, torch.optim.Optimizer]:
    """§4.1 groups: Muon(banks); AdamW "tok" (one group per embedding table); AdamW "scalar" (rest)."""
    named = dict(model.named_parameters())
    banks = [named[n] for n in BANK_NAMES]
    embeds = [named[n] for n in EMBED_NAMES if n in named]
    taken = {id(p) for p in banks + embeds}
    scalars = [p for n, p in named.items() if id(p) not in taken]
    fused = next(model.parameters()).is_cuda
    adam = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, weight_decay=cfg.adam_wd, fused=fused)
    lr_e = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
    tok = torch.optim.AdamW([dict(params=[p], lr=lr_e, base_lr=lr_e) for p in embeds], **adam)
    scal = torch.optim.AdamW([dict(params=scalars, lr=cfg.scalar_lr, base_lr=cfg.scalar_lr)], **adam)
    muon = Muon(banks, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                weight_decay=cfg.muon_wd)
    return muon, tok, scal


def muon_momentum(step: int, cfg: Config) -> float:
    """Linear warm-up from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM over the first steps."""
    f = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
    return (1 - f) * cfg.muon_momentum_warmup_start + f * cfg.muon_momentum


def lr_scale(step: int, elapsed_ms: float, cfg: Config, cap_ms: float | None) -> float:
    """§4.5: wallclock-aware linear warmdown (step-based when there is no cap); no LR warm-up."""
    if cfg.warmdown_iters <= 0:
        return 1.0
    if cap_ms is None:
        start = cfg.iterations - cfg.warmdown_iters
        return (cfg.iterations - step) / max(cfg.warmdown_iters, 1) if step >= start else 1.0
    avg = elapsed_ms / max(step, 1)
    warmdown_ms = cfg.warmdown_iters * avg
    remaining = max(cap_ms - elapsed_ms, 0.0)
    return remaining / max(warmdown_ms, 1e-9) if remaining <= warmdown_ms else 1.0


def set_schedules(optimizers, scale: float, momentum: float) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        if isinstance(opt, Muon):
            for g in opt.param_groups:
                g["momentum"] = momentum


def clip_grads(params, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
