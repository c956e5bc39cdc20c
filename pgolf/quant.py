"""Post-training quantization of the record stack (spec pipeline.md §5.2-§5.6, §5.9).

Four jobs, in the order the pipeline uses them:
1. unbank / rebank: the model trains with four 3-D "banks"; quantization works on per-layer 2-D matrices.
2. collect_hessians: H = X^T X of every quantized matrix's input, captured through the model's
   `hessian_hook` (one uncompiled forward per calibration batch, bf16 GEMM products into fp32 sums).
3. GPTQ (full Hessian, act-order, blocks of 128, five clip candidates picked by MSE). Two versions of the
   same math: `gptq_reference` (one matrix, fp32, plain loops -- the spec's algorithm, used by the tests)
   and `gptq_quantize_batch` (many matrices of one shape and all five candidates at once, on the GPU).
   GPTQ is row-independent once U = chol(H^-1) is known, so the five candidates are just extra rows.
4. quantize_state_dict / dequantize_state_dict: routing (§5.3) and the inverse.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import Tensor

CLIP_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999)  # plus the row max: five candidates (§5.5)
INT8_CLIP_QUANTILE = 0.9999984
PASSTHROUGH_MAX_NUMEL = 65_536
GPTQ_BLOCK = 128
DAMP = 0.01
CONTROL_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
    "skip_weight", "skip_weights", "smear", "dtg_gate", "ve_layer_scales", "ve_shared.scale",
    "attn_gate", "vr_lambda",
)
BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")


# ----------------------------------------------------------------------------------------------------------
# 1. banks <-> per-layer matrices (§5.2)

def _bank_slots(num_layers: int) -> dict[str, list[str]]:
    """Bank name -> the unbanked weight name of each slot, in slot order."""
    L = range(num_layers)
    return {
        "qo_bank": [f"blocks.{i}.attn.c_q.weight" for i in L] + [f"blocks.{i}.attn.proj.weight" for i in L],
        "kv_bank": [f"blocks.{i}.attn.c_k.weight" for i in L] + [f"blocks.{i}.attn.c_v.weight" for i in L],
        "mlp_up_bank": [f"blocks.{i}.mlp.fc.weight" for i in L],
        "mlp_down_bank": [f"blocks.{i}.mlp.proj.weight" for i in L],
    }


def unbank_state_dict(sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Split each bank into per-layer 2-D tensors; every other key is kept as is (order preserved)."""
    slots = _bank_slots(num_layers)
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        bank = next((b for b in BANKS if key == b or key.endswith("." + b)), None)
        if bank is None:
            out[key] = t
            continue
        names = slots[bank]
        if t.shape[0] != len(names):
            raise ValueError(f"{key} has {t.shape[0]} slots, expected {len(names)} for {num_layers} layers")
        for j, name in enumerate(names):
            out[name] = t[j]
    return out


def rebank_state_dict(sd: dict[str, Tensor], num_layers: int, template_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Exact inverse of unbank_state_dict: stack slices in slot order, cast to the template's dtype."""
    slots = _bank_slots(num_layers)
    consumed: set[str] = set()
    out: dict[str, Tensor] = {}
    for key, tmpl in template_sd.items():
        bank = next((b for b in BANKS if key == b or key.endswith("." + b)), None)
        if bank is None:
            if key not in sd:
                raise KeyError(f"missing tensor {key}")
            out[key] = sd[key]
            continue
        names = slots[bank]
        out[key] = torch.stack([sd[n] for n in names]).to(tmpl.dtype)
        consumed.update(names)
    extra = set(sd) - set(out) - consumed
    if extra:
        raise KeyError(f"tensors not in the template: {sorted(extra)[:5]}")
    return out


# ----------------------------------------------------------------------------------------------------------
# 2. Hessians (§5.4)

_HOOK_TARGETS = {  # hook name suffix -> weight names (suffixes) that share the Hessian
    "attn.c_q": ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight"),
    "attn.proj": ("attn.proj.weight",),
    "mlp.fc": ("mlp.fc.weight",),
    "mlp.proj": ("mlp.proj.weight",),
}


def finalize_hessian(H: Tensor, n_batches: int) -> Tensor:
    """Average over batches, then the first 1% damping (the second one happens inside GPTQ)."""
    H = H.detach().float().cpu() / max(n_batches, 1)
    damp = DAMP * max(H.diagonal().mean().item(), 1e-6)
    H.diagonal().add_(damp)
    return H


@torch.no_grad()
def collect_hessians(model: torch.nn.Module, batches, device, autocast_dtype=torch.bfloat16) -> dict[str, Tensor]:
    """Run `batches` ((x, y) pairs) through the model and return finalized Hessians keyed by weight name.

    The products are computed inside the autocast region on purpose: the reference's X^T X is a bf16 GEMM
    whose result is added to an fp32 accumulator, and we keep that rounding for parity.
    """
    device = torch.device(device)
    sums: dict[str, Tensor] = {}

    def hook(name: str, x: Tensor) -> None:
        X = x.detach().reshape(-1, x.shape[-1]).float()
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            prod = X.T @ X
        if name in sums:
            sums[name] += prod.float()
        else:
            sums[name] = prod.float()

    was_training = model.training
    previous = getattr(model, "hessian_hook", None)
    model.eval()
    model.hessian_hook = hook
    n = 0
    try:
        with torch.inference_mode():
            for x, y in batches:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    model(x, y)
                n += 1
    finally:
        model.hessian_hook = previous
        model.train(was_training)
    out: dict[str, Tensor] = {}
    for name, H in sums.items():
        kind = next((k for k in _HOOK_TARGETS if name.endswith("." + k)), None)
        if kind is None:
            raise KeyError(f"unknown hessian hook name {name}")
        prefix = name[: -len(kind) - 1]  # "blocks.{i}"
        Hf = finalize_hessian(H, n)
        for w in _HOOK_TARGETS[kind]:
            out[f"{prefix}.{w}"] = Hf
    return out


# ----------------------------------------------------------------------------------------------------------
# 3. GPTQ

@contextmanager
def _exact_fp32_matmul():
    """TF32 would change GPTQ's rounding decisions; force true fp32 products while we run."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def clip_candidates(W: Tensor) -> Tensor:
    """[5, rows] per-row clip levels: four |W| quantiles (linear interpolation) and the row max."""
    a = W.float().abs()
    q = torch.tensor(CLIP_QUANTILES, dtype=torch.float32, device=W.device)
    return torch.cat([torch.quantile(a, q, dim=1), a.amax(dim=1)[None]], 0)


def scales_from_clip(clip: Tensor, clip_range: int) -> Tensor:
    """s = max(clip/range, 1/range), rounded to fp16 (the stored value is the one used for quantizing)."""
    return (clip / clip_range).clamp_min(1.0 / clip_range).to(torch.float16)


def quantize_int6_rows(W: Tensor, clip_range: int = 31) -> tuple[Tensor, Tensor]:
    """Per-row int6 without a Hessian: five clip candidates, round to nearest, keep the lowest-MSE one."""
    t = W.float()
    if t.ndim != 2:
        amax = t.abs().max().item() if t.numel() else 0.0
        s = torch.tensor(amax / clip_range if amax > 0 else 1.0, dtype=torch.float16)
        q = torch.clamp(torch.round(t / s.float()), -clip_range, clip_range).to(torch.int8)
        return q, s
    best = None
    for clip in clip_candidates(t):
        s = scales_from_clip(clip, clip_range)
        q = torch.clamp(torch.round(t / s.float()[:, None]), -clip_range, clip_range)
        err = (t - q * s.float()[:, None]).pow(2).mean().item()
        if best is None or err < best[0]:
            best = (err, q.to(torch.int8), s)
    return best[1], best[2]


def quantize_int8_rows(W: Tensor) -> tuple[Tensor, Tensor]:
    """Embedding tables (§5.6): clip each row at a high quantile, 8-bit symmetric, fp16 scales."""
    t = W.float()
    if t.ndim == 2:
        clip = torch.quantile(t.abs(), INT8_CLIP_QUANTILE, dim=1) if t.numel() else torch.zeros(t.shape[0])
        clipped = torch.maximum(torch.minimum(t, clip[:, None]), -clip[:, None])
        s = (clip / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / s[:, None]), -127, 127).to(torch.int8)
        return q.contiguous(), s.to(torch.float16).contiguous()
    clip = float(torch.quantile(t.abs().flatten(), INT8_CLIP_QUANTILE).item()) if t.numel() else 0.0
    s = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t, -clip, clip) / s), -127, 127).to(torch.int8)
    return q.contiguous(), s


def _prepare(W: Tensor, H: Tensor):
    """Second damping, dead columns, act-order permutation (§5.5 steps 1-2)."""
    H = H.float().clone()
    cols = H.shape[0]
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(DAMP * H.diagonal().mean())
    perm = torch.argsort(H.diagonal(), descending=True)
    Wp = W.float()[:, perm].clone()
    Wp[:, dead[perm]] = 0.0
    Hp = H[perm][:, perm]
    return Wp, Hp, perm


def gptq_reference(W: Tensor, H: Tensor, clip_range: int = 31, block: int = GPTQ_BLOCK) -> tuple[Tensor, Tensor]:
    """The spec's GPTQ, one matrix, fp32 on the CPU, written for reading rather than speed."""
    W = W.detach().float().cpu()
    rows, cols = W.shape
    Wp, Hp, perm = _prepare(W, H.cpu())
    try:
        L = torch.linalg.cholesky(Hp)
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError:
        return quantize_int6_rows(W, clip_range)
    best = None
    for clip in clip_candidates(W):
        s16 = scales_from_clip(clip, clip_range)
        s = s16.float()
        Q = torch.zeros(rows, cols)
        Wk = Wp.clone()
        for i1 in range(0, cols, block):
            i2 = min(i1 + block, cols)
            W1 = Wk[:, i1:i2].clone()
            E1 = torch.zeros(rows, i2 - i1)
            U1 = U[i1:i2, i1:i2]
            for j in range(i2 - i1):
                w = W1[:, j]
                q = torch.clamp(torch.round(w / s), -clip_range, clip_range)
                Q[:, i1 + j] = q
                e = (w - q * s) / U1[j, j]
                W1[:, j:] -= e[:, None] * U1[j, j:][None, :]
                E1[:, j] = e
            if i2 < cols:
                Wk[:, i2:] -= E1 @ U[i1:i2, i2:]
        mse = (Wp - Q * s[:, None]).pow(2).mean().item()
        if best is None or mse < best[0]:
            best = (mse, Q, s16)
    inv = torch.argsort(perm)
    return best[1][:, inv].to(torch.int8).contiguous(), best[2]


def _gptq_core(Wc: Tensor, S: Tensor, U: Tensor, clip_range: int, block: int) -> Tensor:
    """Batched GPTQ sweep. Wc [B, R, C] permuted weights, S [B, R] scales, U [B, C, C]. Returns Q [B, R, C] (float).

    Column-by-column inside a block (the only sequential part), then one batched matmul per block for the
    lazy update of the remaining columns. Ops mirror gptq_reference so both round the same way.
    """
    B, R, C = Wc.shape
    Q = torch.empty_like(Wc)
    W = Wc.clone()
    diag = U.diagonal(dim1=1, dim2=2)  # [B, C]
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1 = W[:, :, i1:i2].clone()
        E1 = torch.empty_like(W1)
        U1 = U[:, i1:i2, i1:i2]
        for j in range(i2 - i1):
            w = W1[:, :, j]
            q = torch.clamp(torch.round(w / S), -clip_range, clip_range)
            Q[:, :, i1 + j] = q
            e = (w - q * S) / diag[:, i1 + j, None]
            W1[:, :, j:] -= e[:, :, None] * U1[:, j, None, j:]
            E1[:, :, j] = e
        if i2 < C:
            W[:, :, i2:] -= torch.bmm(E1, U[:, i1:i2, i2:])
    return Q


@torch.no_grad()
def gptq_quantize_batch(Ws: list[Tensor], Hs: list[Tensor], clip_range: int = 31, device=None,
                        block: int = GPTQ_BLOCK) -> list[tuple[Tensor, Tensor]]:
    """GPTQ for many matrices. Same-shape matrices and all five clip candidates run as one batch.

    Returns (int8 Q, fp16 scales) per input, on the CPU, in input order. Matrices whose Cholesky fails
    fall back to the per-row int6 quantizer (§5.5 step 3).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    results: list[tuple[Tensor, Tensor] | None] = [None] * len(Ws)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, W in enumerate(Ws):
        if W.ndim != 2:
            raise ValueError("GPTQ needs 2-D matrices")
        groups.setdefault(tuple(W.shape), []).append(k)
    with _exact_fp32_matmul():
        for (R, C), idx in groups.items():
            prepared = [_prepare(Ws[k].to(device), Hs[k].to(device)) for k in idx]
            Hp = torch.stack([p[1] for p in prepared])
            L, info = torch.linalg.cholesky_ex(Hp)
            Hinv = torch.cholesky_inverse(L)
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            ok = (info == 0) & (info2 == 0) & torch.isfinite(U).flatten(1).all(1)
            ok_list = ok.tolist()
            for k, good in zip(idx, ok_list):
                if not good:
                    results[k] = quantize_int6_rows(Ws[k].cpu(), clip_range)
            sel = [n for n, good in enumerate(ok_list) if good]
            if not sel:
                continue
            nc = len(CLIP_QUANTILES) + 1
            S16 = torch.stack([scales_from_clip(clip_candidates(Ws[idx[n]].to(device)), clip_range) for n in sel])
            S = S16.float().reshape(len(sel), nc * R)  # [M, 5R]
            Wp = torch.stack([prepared[n][0] for n in sel])  # [M, R, C]
            Wc = Wp[:, None].expand(-1, nc, -1, -1).reshape(len(sel), nc * R, C)
            Q = _gptq_core(Wc, S, U[sel], clip_range, block).reshape(len(sel), nc, R, C)
            err = (Wp[:, None] - Q * S16.float()[..., None]).pow(2).mean(dim=(2, 3))  # [M, 5]
            pick = err.argmin(dim=1)  # first minimum wins, as with a strict '<' in a loop
            for m, n in enumerate(sel):
                c = int(pick[m])
                inv = torch.argsort(prepared[n][2])
                results[idx[n]] = (Q[m, c][:, inv].to(torch.int8).cpu().contiguous(), S16[m, c].cpu().contiguous())
    return results  # type: ignore[return-value]


def gptq_quantize_matrix(W: Tensor, H: Tensor, clip_range: int = 31, device=None) -> tuple[Tensor, Tensor]:
    """Full-Hessian GPTQ of one matrix with the batched implementation (GPU when available)."""
    return gptq_quantize_batch([W], [H], clip_range, device)[0]


# ----------------------------------------------------------------------------------------------------------
# 4. routing and the state-dict round trip (§5.3, §5.9)

def route(name: str, t: Tensor) -> str:
    """'passthrough' | 'passthrough_ctrl' | 'int6' | 'int8' -- the first matching rule wins (§5.3)."""
    if not t.is_floating_point() or t.numel() <= PASSTHROUGH_MAX_NUMEL:
        return "passthrough"
    if any(p in name for p in CONTROL_PATTERNS):
        return "passthrough_ctrl"
    if (".attn." in name or ".mlp." in name) and t.ndim >= 1:
        return "int6"
    return "int8"


def quantize_state_dict(sd_unbanked: dict[str, Tensor], hessians: dict[str, Tensor] | None, clip_range: int = 31,
                        device=None) -> tuple[dict[str, Tensor], dict[str, object], dict[str, float]]:
    """Quantize an unbanked state dict. Returns (tensors, meta, stats); see §5.7 for the names."""
    hessians = hessians or {}
    t0 = time.perf_counter()
    out: dict[str, Tensor] = {}
    meta: dict[str, object] = {}
    gptq_names: list[str] = []
    naive = 0
    for name, tensor in sd_unbanked.items():
        t = tensor.detach().cpu().contiguous()
        kind = route(name, t)
        if kind == "passthrough":
            out[name] = t.to(torch.float16) if t.is_floating_point() else t
            meta[name] = "passthrough"
        elif kind == "passthrough_ctrl":
            out[name] = t.float()
            meta[name] = "passthrough_ctrl"
        elif kind == "int6":
            meta[name] = {"type": "int6"}
            if t.ndim == 2 and name in hessians:
                gptq_names.append(name)
            else:
                out[name + ".q"], out[name + ".scale"] = quantize_int6_rows(t, clip_range)
                naive += 1
        else:
            out[name + ".q"], out[name + ".scale"] = quantize_int8_rows(t)
            meta[name] = {"type": "int8"}
    if gptq_names:
        res = gptq_quantize_batch([sd_unbanked[n].detach() for n in gptq_names], [hessians[n] for n in gptq_names],
                                  clip_range, device)
        for n, (q, s) in zip(gptq_names, res):
            out[n + ".q"], out[n + ".scale"] = q, s
    ordered = {}
    for name in sd_unbanked:  # keep the state-dict order regardless of when GPTQ filled entries in
        for key in (name, name + ".q", name + ".scale"):
            if key in out:
                ordered[key] = out[key]
    stats = {"gptq_layers": len(gptq_names), "naive_layers": naive, "seconds": time.perf_counter() - t0}
    return ordered, meta, stats


def dequantize_state_dict(quantized: dict[str, Tensor], meta: dict[str, object],
                          template_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of quantize_state_dict against the unbanked template (dtypes come from the template)."""
    out: dict[str, Tensor] = {}
    for name, tmpl in template_sd.items():
        info = meta.get(name)
        if info is None:
            raise KeyError(f"artifact has no entry for {name}")
        if info in ("passthrough", "passthrough_ctrl"):
            t = quantized[name]
            if t.is_floating_point() and t.dtype != tmpl.dtype:
                t = t.to(tmpl.dtype)
            out[name] = t
            continue
        q, s = quantized[name + ".q"], quantized[name + ".scale"]
        if s.ndim > 0:
            out[name] = (q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))).to(tmpl.dtype)
        else:
            out[name] = (q.float() * float(s.item())).to(tmpl.dtype)
    return out
