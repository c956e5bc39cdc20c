"""Validation: the standard eval (§6.1) and the sliding-window eval that produces the score (§6.2).

Why the sliding eval here is faster than the reference while computing the same numbers:
- windows are gathered on the GPU from one resident copy of the val tokens (no per-window host copies);
- "regular" windows (full length, not the first) all score exactly their last `stride` positions, so they
  go through fixed-shape batches: no boolean masks, no host syncs, and the final partial batch is padded
  instead of triggering a recompile;
- with a `Scorer` (hidden states + tied head) only the scored positions go through the LM head and the
  fp32 cross entropy -- 64 of 2048 positions per window;
- the first window and the short tail windows (the duplicate-counting quirk) take a small masked path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from pgolf.bpb import BPBAccumulator, bpb_from_sums, target_bytes
from pgolf.distributed import all_reduce_sum as _all_reduce_sum


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, dtype):
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _default_autocast(device: torch.device):
    return torch.bfloat16 if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------------------------
# §6.1 standard eval

@torch.no_grad()
def standard_eval(model, val_tokens: torch.Tensor, luts, cfg, rank: int = 0, world: int = 1,
                  autocast_dtype="auto") -> tuple[float, float]:
    """Non-overlapping seq_len sequences, contiguous per rank, model(x, y) mean loss × count. -> (loss, bpb)."""
    device = _device_of(model)
    if autocast_dtype == "auto":
        autocast_dtype = _default_autocast(device)
    seq_len = cfg.eval_seq_len if cfg.eval_seq_len > 0 else cfg.train_seq_len
    grad_accum = max(8 // world, 1)
    local_batch_seqs = max(cfg.val_batch_size // (world * grad_accum) // seq_len, 1)
    total_seqs = (val_tokens.numel() - 1) // seq_len
    s0, s1 = total_seqs * rank // world, total_seqs * (rank + 1) // world
    luts = luts.to(device)
    acc = BPBAccumulator(device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for bs in range(s0, s1, local_batch_seqs):
            be = min(bs + local_batch_seqs, s1)
            local = val_tokens[bs * seq_len: be * seq_len + 1].to(device=device, dtype=torch.int64, non_blocking=True)
            x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
            with _autocast(device, autocast_dtype):
                loss = model(x, y).detach()
            acc.add_mean(loss, x, y, luts)
    acc.all_reduce()
    model.train(was_training)
    return acc.result()


# ----------------------------------------------------------------------------------------------------------
# §6.2 sliding window

@dataclass
class Scorer:
    """Split forward for the sliding eval: hidden states for whole windows, the head only where scored."""
    hidden: Callable[[torch.Tensor], torch.Tensor]  # x [B,T] -> z [B,T,d]
    head: Callable[[torch.Tensor], torch.Tensor]    # z [..., d] -> fp32 soft-capped logits [..., V]


def model_scorer(model, compile: bool | None = None) -> Scorer:
    """A Scorer for pgolf.model.GPT (tied, soft-capped head: the same math as model.forward_logits)."""
    cap = model.softcap

    def head(z: torch.Tensor) -> torch.Tensor:
        logits = F.linear(z, model.tok_emb.weight.to(z.dtype)).float()
        return cap * torch.tanh(logits / cap)

    hidden = model.hidden
    if compile is None:
        compile = _device_of(model).type == "cuda"
    if compile:
        hidden = torch.compile(hidden, dynamic=False, fullgraph=True)
    return Scorer(hidden, head)


def window_starts(total_tokens: int, seq_len: int, stride: int) -> torch.Tensor:
    """Every ws = 0, stride, 2·stride, ... < total_tokens (each window has ≥ 1 target)."""
    return torch.arange(0, total_tokens, stride, dtype=torch.int64)


def scored_range(ws: int, total_tokens: int, seq_len: int, stride: int) -> tuple[int, int]:
    """Scored positions [s, wlen) inside window ws: all of the first window, else the last `stride`."""
    wlen = min(ws + seq_len, total_tokens) - ws
    return (0 if ws == 0 else max(wlen - stride, 0)), wlen


def expected_scored_count(total_tokens: int, seq_len: int, stride: int) -> int:
    """Σ scored targets including the tail duplicates (the reference's 62,023,616 for 62,021,632 tokens)."""
    ws = window_starts(total_tokens, seq_len, stride)
    wlen = (ws + seq_len).clamp(max=total_tokens) - ws
    first = torch.where(ws == 0, 0, (wlen - stride).clamp(min=0))  # scored_range, vectorized
    return int((wlen - first).sum())


def _gather_windows(tok: torch.Tensor, ws: torch.Tensor, seq_len: int, total: int):
    """x, y [B, seq_len] int64 for windows starting at ws; padding (after the real tokens) is token 0."""
    idx = ws[:, None] + torch.arange(seq_len + 1, device=tok.device)[None]
    valid = idx <= total
    win = torch.where(valid, tok[idx.clamp(max=total)], 0).long()
    x, y = win[:, :-1], win[:, 1:]
    x = torch.where(valid[:, 1:], x, 0)  # inputs past the window end are padding too
    return x, y


def _score(logits_fn, x: torch.Tensor, lo: int, autocast_dtype, device) -> torch.Tensor:
    """fp32 logits of positions lo..T-1 of every window."""
    with _autocast(device, autocast_dtype):
        if isinstance(logits_fn, Scorer):
            z = logits_fn.hidden(x)
            return logits_fn.head(z[:, lo:]).float()
        return logits_fn(x)[:, lo:].float()


@torch.no_grad()
def sliding_window_eval(logits_fn, val_tokens: torch.Tensor, luts, seq_len: int, stride: int, batch_seqs: int = 32,
                        rank: int = 0, world: int = 1, device=None, autocast_dtype="auto",
                        windows: torch.Tensor | None = None, sums_out: torch.Tensor | None = None
                        ) -> tuple[float, float]:
    """Sliding-window val (loss, bpb). `logits_fn` is a Scorer or any callable x [B,T] -> logits [B,T,V].

    `windows` restricts scoring to the given window starts (used by TTT: the caller owns the rank split).
    With `sums_out` (float64 [loss, tokens, bytes]) the local sums are added there and NOT all-reduced.
    """
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if autocast_dtype == "auto":
        autocast_dtype = _default_autocast(device)
    total = val_tokens.numel() - 1
    tok = val_tokens.to(device=device, dtype=torch.int32)
    luts = luts.to(device)
    if windows is None:
        allw = window_starts(total, seq_len, stride)
        n = allw.numel()
        mine = allw[n * rank // world: n * (rank + 1) // world]
    else:
        mine = windows.to(torch.int64).cpu()
    wlen = (mine + seq_len).clamp(max=total) - mine
    regular = (mine > 0) & (wlen == seq_len) & (stride <= seq_len)
    reg_ws, odd_ws = mine[regular].to(device), mine[~regular].tolist()

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    byte_sum = torch.zeros((), dtype=torch.int64, device=device)
    token_count = 0
    lo = seq_len - stride
    for b in range(0, reg_ws.numel(), batch_seqs):
        ws = reg_ws[b:b + batch_seqs]
        n_real = ws.numel()
        if n_real < batch_seqs:  # pad to the compiled shape; the copies are dropped below
            ws = torch.cat([ws, ws[:1].expand(batch_seqs - n_real)])
        x, y = _gather_windows(tok, ws, seq_len, total)
        logits = _score(logits_fn, x, lo, autocast_dtype, device)[:n_real]
        tgt, prev = y[:n_real, lo:], x[:n_real, lo:]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none")
        loss_sum += nll.double().sum()
        byte_sum += target_bytes(prev, tgt, luts).sum()
        token_count += tgt.numel()
    # first window and short tail windows: same padded batch shape (no recompile), scored with a mask
    for b in range(0, len(odd_ws), batch_seqs):
        group = odd_ws[b:b + batch_seqs]
        ws = torch.tensor(group + group[:1] * (batch_seqs - len(group)), device=device)
        x, y = _gather_windows(tok, ws, seq_len, total)
        with _autocast(device, autocast_dtype):
            out = logits_fn.hidden(x) if isinstance(logits_fn, Scorer) else logits_fn(x)
        for i, w in enumerate(group):
            s, e = scored_range(w, total, seq_len, stride)
            with _autocast(device, autocast_dtype):
                logits = logits_fn.head(out[i, s:e]) if isinstance(logits_fn, Scorer) else out[i, s:e]
            nll = F.cross_entropy(logits.float(), y[i, s:e], reduction="none")
            loss_sum += nll.double().sum()
            byte_sum += target_bytes(x[i, s:e], y[i, s:e], luts).sum()
            token_count += e - s
    sums = torch.stack([loss_sum, torch.tensor(float(token_count), dtype=torch.float64, device=device),
                        byte_sum.double()])
    if sums_out is not None:
        sums_out += sums.to(sums_out.device)
    else:
        _all_reduce_sum(sums)
    loss, tokens, nbytes = sums.tolist()
    return bpb_from_sums(loss, tokens, nbytes) if tokens and nbytes else (math.nan, math.nan)
