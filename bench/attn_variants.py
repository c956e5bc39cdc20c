"""Time the attention kernels available without FA3 at the record's shapes (fwd+bwd, one micro-batch of
48x2048, 8 query / 4 KV heads of 64) and check them against FA2. Usage: python bench/attn_variants.py"""
from __future__ import annotations

import importlib
import os

import torch


def run(backend: str, q, k, v, g, iters: int = 20):
    os.environ["PGOLF_SDPA_BACKEND"] = backend
    import pgolf.attention as A

    A = importlib.reload(A)
    A.configure_sdpa()
    fn = A.causal_attention

    def step():
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv)
        out.backward(g)
        return out
    out = step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        step()
    e.record()
    torch.cuda.synchronize()
    return out.detach(), s.elapsed_time(e) / iters, (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    torch.manual_seed(0)
    B, T, H, Hkv, D = 48, 2048, 8, 4, 64
    q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, T, Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, T, Hkv, D, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    ref = None
    for backend in ("flash", "cudnn", "cudnn_repeat"):
        try:
            out, ms, mib = run(backend, q, k, v, g)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"attn {backend:13s} unavailable: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        ref = out if ref is None else ref
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"attn {backend:13s} fwd+bwd {ms:7.2f} ms  peak +{mib:7.0f} MiB  rel_err_vs_flash {err:.2e}")


if __name__ == "__main__":
    main()
