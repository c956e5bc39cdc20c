"""Legal score-first test-time training (spec §6.3, from PR #549; off in the record: TTT_ENABLED=0).

The val stream is cut into chunks of `ttt_chunk_tokens`. For each chunk, in order: first SCORE every
sliding window whose first scored position falls in the chunk (inference mode, added to the final sums),
then TRAIN on the chunk's whole sequences with SGD. Training on chunk c only ever sees targets at or
before chunk c's end, all of which were scored already -- that is what makes it "legal". The last chunk
is never trained on (nothing is left to score after it).

Two reference quirks are kept on purpose: the window filter "≥ stride tokens, or the first window", and
freezing by the name prefix `blocks.{b}.`, which in the banked model freezes only those blocks' scalars
(the bank matrices are model-level parameters and are always adapted).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from pgolf.bpb import bpb_from_sums
from pgolf.evaluate import _all_reduce_sum, _autocast, _default_autocast, model_scorer, scored_range, sliding_window_eval


def ttt_windows(total_tokens: int, seq_len: int, stride: int) -> list[int]:
    return [ws for ws in range(0, total_tokens, stride)
            if min(ws + seq_len, total_tokens) - ws >= stride or ws == 0]


def chunk_of_windows(starts: list[int], total_tokens: int, seq_len: int, stride: int, chunk_tokens: int
                     ) -> list[list[int]]:
    """Windows grouped by the chunk that holds their FIRST scored position (last chunk takes overflow)."""
    num_chunks = math.ceil(total_tokens / chunk_tokens)
    out: list[list[int]] = [[] for _ in range(num_chunks)]
    for ws in starts:
        s, _ = scored_range(ws, total_tokens, seq_len, stride)
        out[min((ws + s) // chunk_tokens, num_chunks - 1)].append(ws)
    return out


def frozen_names(model: torch.nn.Module, freeze_blocks: int) -> set[str]:
    prefixes = tuple(f"blocks.{b}." for b in range(freeze_blocks))
    return {n for n, _ in model.named_parameters() if any(p in n for p in prefixes)}


def ttt_sliding_eval(model: torch.nn.Module, val_tokens: torch.Tensor, luts, cfg, rank: int = 0, world: int = 1,
                     device=None, log: Callable[[str], None] = print, logits_fn=None) -> tuple[float, float]:
    """Score-first TTT over the whole val stream. Returns (val_loss, val_bpb); leaves the model adapted."""
    import torch.distributed as dist

    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    amp = _default_autocast(device)
    seq_len = cfg.eval_seq_len if cfg.eval_seq_len > 0 else cfg.train_seq_len
    stride, chunk = cfg.eval_stride, cfg.ttt_chunk_tokens
    total = val_tokens.numel() - 1
    starts = ttt_windows(total, seq_len, stride)
    chunks = chunk_of_windows(starts, total, seq_len, stride, chunk)
    num_chunks = len(chunks)
    if logits_fn is None:
        logits_fn = model_scorer(model, compile=False) if hasattr(model, "hidden") else model.forward_logits
    frozen = frozen_names(model, cfg.ttt_freeze_blocks)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
        if n not in frozen:
            params.append(p)
    opt = torch.optim.SGD(params, lr=cfg.ttt_lr, momentum=cfg.ttt_momentum)
    log(f"ttt_sliding:start chunks={num_chunks} chunk_tokens={chunk} total_windows={len(starts)} stride={stride} "
        f"ttt_lr={cfg.ttt_lr} ttt_epochs={cfg.ttt_epochs} freeze_blocks={cfg.ttt_freeze_blocks}")
    log(f"ttt_sliding:params unfrozen={sum(p.numel() for p in params)} "
        f"frozen={sum(p.numel() for n, p in model.named_parameters() if n in frozen)}")
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    tok = val_tokens.to(device=device, dtype=torch.int64)
    tok32 = val_tokens.to(device=device, dtype=torch.int32)  # resident copy the scorer gathers windows from
    t0 = time.perf_counter()
    distributed = dist.is_available() and dist.is_initialized() and world > 1
    for c, wins in enumerate(chunks):
        # (a) score: this chunk's windows, contiguous per rank
        mine = wins[len(wins) * rank // world: len(wins) * (rank + 1) // world]
        model.eval()
        if mine:
            with torch.inference_mode():
                sliding_window_eval(logits_fn, tok32, luts, seq_len, stride, cfg.ttt_batch_seqs, device=device,
                                    windows=torch.tensor(mine), sums_out=sums)
        # (b) train on the chunk just scored -- never on the last one
        if c < num_chunks - 1 and cfg.ttt_epochs > 0:
            c0, c1 = c * chunk, min((c + 1) * chunk, total)
            n_seqs = (c1 - c0) // seq_len
            if n_seqs > 0:
                lr = cfg.ttt_lr * 0.5 * (1.0 + math.cos(math.pi * c / max(num_chunks - 1, 1)))
                for g in opt.param_groups:
                    g["lr"] = lr
                s0, s1 = n_seqs * rank // world, n_seqs * (rank + 1) // world
                model.train()
                for _ in range(cfg.ttt_epochs):
                    for bs in range(0, s1 - s0, cfg.ttt_batch_seqs):
                        be = min(bs + cfg.ttt_batch_seqs, s1 - s0)
                        a, b = c0 + (s0 + bs) * seq_len, c0 + (s0 + be) * seq_len + 1
                        if b > tok.numel():
                            continue
                        local = tok[a:b]
                        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
                        opt.zero_grad(set_to_none=True)
                        with _autocast(device, amp):
                            loss = model(x, y)
                        loss.backward()
                        if distributed:
                            for p in params:
                                if p.grad is not None:
                                    dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                        torch.nn.utils.clip_grad_norm_(params, cfg.ttt_grad_clip)
                        opt.step()
        if rank == 0 and (c % 10 == 0 or c == num_chunks - 1) and sums[1] > 0:
            _, bpb = bpb_from_sums(*sums.tolist())
            log(f"  ttt_chunk [{c + 1}/{num_chunks}] bpb={bpb:.6f} time={time.perf_counter() - t0:.1f}s")
    _all_reduce_sum(sums)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    val_loss, val_bpb = bpb_from_sums(*sums.tolist())
    log(f"ttt_sliding:done val_loss={val_loss:.6f} val_bpb={val_bpb:.6f} elapsed={time.perf_counter() - t0:.1f}s")
    return val_loss, val_bpb
