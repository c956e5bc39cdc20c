"""Bits per byte: byte look-up tables from a SentencePiece model and the metric sums (pipeline.md §2).

The tables come from the model file itself, so tokenizers with byte-fallback pieces (<0x00>..<0xFF>,
one byte each) and without them (unknown characters become <unk>, zero bytes) both work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ByteLUTs:
    base_bytes: torch.Tensor         # int16 [V]: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # bool [V]: piece starts with "▁" (counts one byte unless after a boundary)
    is_boundary: torch.Tensor        # bool [V]: control/unknown/unused ids (and ids past the sp vocab)

    def to(self, device) -> "ByteLUTs":
        return ByteLUTs(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))


def build_luts(sp, vocab_size: int) -> ByteLUTs:
    """`sp` is a sentencepiece.SentencePieceProcessor; tables span max(sp vocab, vocab_size) ids."""
    n = max(sp.vocab_size(), vocab_size)
    base = torch.zeros(n, dtype=torch.int16)
    space = torch.zeros(n, dtype=torch.bool)
    boundary = torch.ones(n, dtype=torch.bool)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUTs(base, space, boundary)


def load_luts(model_path: str, vocab_size: int) -> ByteLUTs:
    import sentencepiece as spm

    if not str(model_path).endswith(".model"):
        raise ValueError(f"tokenizer path must end in .model: {model_path}")
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    if sp.vocab_size() != vocab_size:
        raise ValueError(f"tokenizer vocab {sp.vocab_size()} != VOCAB_SIZE {vocab_size}")
    return build_luts(sp, vocab_size)


def target_bytes(prev: torch.Tensor, tgt: torch.Tensor, luts: ByteLUTs) -> torch.Tensor:
    """Bytes each target token encodes: base bytes + its "▁" space unless the previous token is a boundary."""
    b = luts.base_bytes[tgt].to(torch.int64)
    return b + (luts.has_leading_space[tgt] & ~luts.is_boundary[prev]).to(torch.int64)


class BPBAccumulator:
    """float64 sums of (nll, count, bytes); all-reduce them across ranks before `result()`."""

    def __init__(self, device="cpu"):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, tokens, bytes

    def add(self, nll: torch.Tensor, prev: torch.Tensor, tgt: torch.Tensor, luts: ByteLUTs) -> None:
        """nll: per-target natural-log loss; prev/tgt: input and target ids at the same positions."""
        self.sums[0] += nll.double().sum()
        self.sums[1] += nll.numel()
        self.sums[2] += target_bytes(prev, tgt, luts).double().sum()

    def add_mean(self, mean_loss: torch.Tensor, prev: torch.Tensor, tgt: torch.Tensor, luts: ByteLUTs) -> None:
        """The standard eval's way: mean loss × token count."""
        count = tgt.numel()
        self.sums[0] += mean_loss.double() * count
        self.sums[1] += count
        self.sums[2] += target_bytes(prev, tgt, luts).double().sum()

    def all_reduce(self) -> None:
        from pgolf.distributed import all_reduce_sum

        all_reduce_sum(self.sums)

    def result(self) -> tuple[float, float]:
        return bpb_from_sums(*self.sums.tolist())


def bpb_from_sums(loss_sum: float, token_count: float, byte_count: float) -> tuple[float, float]:
    """(val_loss, val_bpb) = (Σnll/Σ1, (val_loss/ln2)·(Σ1/Σbytes))."""
    val_loss = loss_sum / token_count
    return val_loss, (val_loss / math.log(2.0)) * (token_count / byte_count)
