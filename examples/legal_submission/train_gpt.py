"""A small, legal Parameter Golf training script (the pgolf-audit example submission).

Shape of a compliant record, kept short enough to read in one sitting:
* training reads only the training shards (`fineweb_train_*.bin`), inside a wall-clock budget
  (MAX_WALLCLOCK_SECONDS, default 600) that excludes the compile warm-up, and stops early on it;
* the model is quantized to int8 per row and compressed with lzma; the artifact size printed is
  this file's bytes plus the compressed model's bytes;
* evaluation is a sliding window over the validation shards with byte counts from the
  tokenizer's pieces, and optional score-first test-time training: each chunk is scored under
  `torch.inference_mode()` before the model adapts on it, and the last chunk is never trained on.

Run: torchrun --standalone --nproc_per_node=8 train_gpt.py
"""
from __future__ import annotations

import glob
import io
import lzma
import math
import os
import time
import uuid

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    seed = int(os.environ.get("SEED", 1337))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    num_layers = int(os.environ.get("NUM_LAYERS", 7))
    model_dim = int(os.environ.get("MODEL_DIM", 448))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    mlp_mult = int(os.environ.get("MLP_MULT", 3))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524288))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 20))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    lr = float(os.environ.get("LR", 0.003))
    eval_stride = int(os.environ.get("EVAL_STRIDE", 64))
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", 1)))
    ttt_chunk_tokens = int(os.environ.get("TTT_CHUNK_TOKENS", 32768))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))


def log0(msg: str) -> None:
    if int(os.environ.get("RANK", 0)) == 0:
        print(msg, flush=True)


def load_shard(path: str) -> torch.Tensor:
    header = np.fromfile(path, dtype="<i4", count=256)
    tokens = np.fromfile(path, dtype="<u2", count=int(header[2]), offset=256 * 4)
    return torch.from_numpy(tokens.astype(np.int64))


class TrainLoader:
    """Streams the training shards in order; each rank takes its own slice of every batch."""

    def __init__(self, pattern: str, rank: int, world: int):
        self.files = sorted(glob.glob(pattern))
        self.rank, self.world, self.file_idx, self.pos = rank, world, 0, 0
        self.tokens = load_shard(self.files[0])

    def next_batch(self, batch_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        per_rank = batch_tokens // self.world
        need = per_rank * self.world + 1
        if self.pos + need > self.tokens.numel():
            self.file_idx = (self.file_idx + 1) % len(self.files)
            self.tokens, self.pos = load_shard(self.files[self.file_idx]), 0
        chunk = self.tokens[self.pos:self.pos + need]
        self.pos += need - 1
        local = chunk[self.rank * per_rank:(self.rank + 1) * per_rank + 1]
        return local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_mult: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.fc, self.out = nn.Linear(dim, mlp_mult * dim, bias=False), nn.Linear(mlp_mult * dim, dim, bias=False)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.relu(self.fc(self.ln2(x))).square())


class GPT(nn.Module):
    def __init__(self, h: Hyperparameters):
        super().__init__()
        self.emb = nn.Embedding(h.vocab_size, h.model_dim)
        self.blocks = nn.ModuleList(Block(h.model_dim, h.num_heads, h.mlp_mult) for _ in range(h.num_layers))
        self.ln = nn.LayerNorm(h.model_dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln(x), self.emb.weight)   # tied head: a full distribution over the vocabulary


def quantize_int8(state: dict[str, torch.Tensor]) -> bytes:
    packed = {}
    for name, w in state.items():
        w = w.float()
        if w.ndim == 2:
            scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127.0
            packed[name] = ((w / scale).round().to(torch.int8), scale.half())
        else:
            packed[name] = (w.half(), None)
    buf = io.BytesIO()
    torch.save(packed, buf)
    return lzma.compress(buf.getvalue(), preset=9)


def dequantize_int8(blob: bytes) -> dict[str, torch.Tensor]:
    packed = torch.load(io.BytesIO(lzma.decompress(blob)))
    return {k: (q.float() * s.float() if s is not None else q.float()) for k, (q, s) in packed.items()}


def byte_luts(sp: spm.SentencePieceProcessor, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bytes per token from its piece: the leading-space marker is one byte, counted only after a
    non-boundary token, so no byte is counted twice."""
    base = torch.zeros(vocab, dtype=torch.int64)
    space = torch.zeros(vocab, dtype=torch.bool)
    boundary = torch.zeros(vocab, dtype=torch.bool)
    for i in range(vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
            continue
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            base[i] = 1
            continue
        space[i] = piece.startswith("\u2581")
        base[i] = len(piece.lstrip("\u2581").encode("utf-8"))
    return base, space, boundary


def score_window(model, tokens, start, end, stride, luts) -> tuple[float, float]:
    """Summed nats and bytes of tokens[start+1:end+1], each scored once with up to `stride` context."""
    base, space, boundary = luts
    nll, nbytes = 0.0, 0.0
    for pos in range(start, end, stride):
        ctx_lo = max(0, pos - 1024 + stride)
        x = tokens[ctx_lo:min(pos + stride, end)].unsqueeze(0)
        y = tokens[ctx_lo + 1:min(pos + stride, end) + 1].unsqueeze(0)
        logits = model(x)
        keep = slice(pos - ctx_lo, None)
        losses = F.cross_entropy(logits[0, keep].float(), y[0, keep], reduction="none")
        prev, tgt = x[0, keep], y[0, keep]
        nll += losses.sum().item()
        nbytes += (base[tgt] + (space[tgt] & ~boundary[prev])).sum().item()
    return nll, nbytes


def evaluate(model, val_tokens, h, luts) -> tuple[float, float]:
    """Sliding-window evaluation; with TTT, each chunk is scored before the model adapts on it."""
    total_nll, total_bytes = 0.0, 0.0
    n = val_tokens.numel() - 1
    chunks = list(range(0, n, h.ttt_chunk_tokens))
    opt = torch.optim.SGD(model.parameters(), lr=h.ttt_lr) if h.ttt_enabled else None
    for ci, lo in enumerate(chunks):
        hi = min(lo + h.ttt_chunk_tokens, n)
        with torch.inference_mode():
            nll, nb = score_window(model, val_tokens, lo, hi, h.eval_stride, luts)
        total_nll += nll
        total_bytes += nb
        is_last_chunk = ci == len(chunks) - 1
        if opt is not None and not is_last_chunk:
            x = val_tokens[lo:hi].view(1, -1)
            y = val_tokens[lo + 1:hi + 1].view(1, -1)
            loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    val_loss = total_nll / n
    return val_loss, total_nll / math.log(2) / total_bytes


def main() -> None:
    h = Hyperparameters()
    code = open(__file__, encoding="utf-8").read()
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(h.seed)
    log0(f"logs/{uuid.uuid4()}.txt")
    log0(f"world_size:{world} grad_accum_steps:1")
    log0("Hyperparameters:")
    for k in sorted(vars(Hyperparameters)):
        if not k.startswith("_"):
            log0(f"  {k}: {getattr(h, k)}")
    log0(f"seed:{h.seed}")

    loader = TrainLoader(os.path.join(h.data_path, "fineweb_train_*.bin"), rank, world)
    log0(f"train_shards: {len(loader.files)}")
    model = GPT(h).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=h.lr, betas=(0.9, 0.95), weight_decay=0.0)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(h.warmup_steps):   # compile warm-up on training batches, then back to the true init
        x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len)
        F.cross_entropy(model(x.to(device)).flatten(0, 1).float(), y.to(device).flatten()).backward()
        opt.zero_grad(set_to_none=True)
        log0(f"warmup_step:{i + 1}/{h.warmup_steps}")
    model.load_state_dict(init_state)
    loader = TrainLoader(os.path.join(h.data_path, "fineweb_train_*.bin"), rank, world)

    train_ms, step, t0 = 0.0, 0, time.perf_counter()
    while step < h.iterations:
        x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len)
        loss = F.cross_entropy(model(x.to(device)).flatten(0, 1).float(), y.to(device).flatten())
        loss.backward()
        if distributed:
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        train_ms = 1000.0 * (time.perf_counter() - t0)
        if step % 200 == 0:
            log0(f"step:{step}/{h.iterations} train_loss:{loss.item():.4f} train_time:{train_ms:.0f}ms "
                 f"step_avg:{train_ms / step:.2f}ms")
        # stop before the step that would cross the cap, so the timed loop never overshoots it
        if h.max_wallclock_seconds > 0 and train_ms + train_ms / step >= 1000.0 * h.max_wallclock_seconds:
            log0(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{h.iterations}")
            break

    blob = quantize_int8(model.state_dict())
    code_bytes = len(code.encode("utf-8"))
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Serialized model int8+lzma: {len(blob)} bytes")
    log0(f"Total submission size int8+lzma: {code_bytes + len(blob)} bytes")
    if rank == 0:
        with open("final_model.int8.ptz", "wb") as f:
            f.write(blob)

    model.load_state_dict(dequantize_int8(blob))
    sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    luts = byte_luts(sp, h.vocab_size)
    val_tokens = torch.cat([load_shard(f) for f in sorted(glob.glob(os.path.join(h.data_path, "fineweb_val_*.bin")))])
    log0(f"val_tokens: {val_tokens.numel()}")
    t_eval = time.perf_counter()
    val_loss, val_bpb = evaluate(model, val_tokens.to(device), h, tuple(t.to(device) for t in luts))
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    log0(f"final_int8_sliding_window val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} stride:{h.eval_stride} eval_time:{eval_ms:.0f}ms")
    log0(f"final_int8_sliding_window_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
