"""Shard I/O, the coprime-stride training sampler and validation tokens (pipeline.md §1).

The sampler must replay the record's data order bit for bit, so its numpy RNG calls are made in
exactly the documented order; it is a pure object over shard sizes (no files), which is what the
unit tests drive. `CoprimeStrideLoader` adds the files and the rank split on top.
"""
from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
import torch

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
RAMP_BATCHES = 1800  # loader constants of the record: mix/alpha ramp length
FNV_PRIME = 1099511628211


class ShardError(ValueError):
    """A shard file that does not follow the competition format. `code` is stable."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


# ---------------------------------------------------------------------------------------------
# shard files
def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count N."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ShardError("shard_short_header", f"{path}: {len(raw)} bytes, header needs {HEADER_BYTES}")
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != MAGIC:
        raise ShardError("shard_bad_magic", f"{path}: magic {int(header[0])}, expected {MAGIC}")
    if int(header[1]) != VERSION:
        raise ShardError("shard_bad_version", f"{path}: version {int(header[1])}, expected {VERSION}")
    n = int(header[2])
    expected = HEADER_BYTES + 2 * n
    size = path.stat().st_size
    if n < 0 or size != expected:
        raise ShardError("shard_bad_size", f"{path}: {size} bytes, header says {n} tokens = {expected} bytes")
    return n


def write_shard(path: str | Path, tokens) -> None:
    """Write tokens (< 65536) in the competition format: 256-int32 header, then uint16 body."""
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        raise ValueError("token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())


_MEMMAPS: dict[str, np.memmap] = {}  # process-global: every loader instance shares the maps


def shard_memmap(path: str | Path, n: int) -> np.memmap:
    key = str(path)
    if key not in _MEMMAPS:
        _MEMMAPS[key] = np.memmap(key, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    return _MEMMAPS[key]


def load_shard(path: str | Path) -> np.ndarray:
    n = read_header(path)
    data = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES, count=n)
    if data.size != n:
        raise ShardError("shard_short_read", f"{path}: read {data.size} of {n} tokens")
    return data


def find_shards(data_path: str, split: str) -> list[Path]:
    """Sorted shard list; pathlib renders the glob results (a leading './' disappears)."""
    pattern = os.path.join(data_path, f"fineweb_{split}_*.bin")
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        raise ShardError("no_shards", f"no files match {pattern}")
    return files


def path_seed(paths) -> int:
    """The loader seed: FNV-1a-style 64-bit hash over the path strings, starting from 0."""
    h = 0
    for p in paths:
        for b in str(p).encode("utf-8"):
            h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------------------------------------
# the sampler (a pure object over shard sizes)
class CoprimeStrideSampler:
    """Deterministic multi-shard sampler of (shard, offset) windows of seq_len+1 tokens."""

    def __init__(self, shard_tokens: list[int], seed: int, seq_len: int):
        self.seq_len = seq_len
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.sizes = [int(n) for n in shard_tokens]
        self.eligible = [i for i, n in enumerate(self.sizes) if (n - 1) // seq_len > 0]
        if not self.eligible:
            raise ShardError("no_eligible_shards", f"no shard holds more than {seq_len} + 1 tokens")
        self.base_blocks = np.array([(self.sizes[i] - 1) // seq_len for i in self.eligible], dtype=np.float64)
        k = len(self.sizes)
        self.phase = np.zeros(k, np.int64)
        self.bc = np.zeros(k, np.int64)
        self.next = np.zeros(k, np.int64)
        self.start = np.zeros(k, np.int64)
        self.stride = np.zeros(k, np.int64)
        self.init = np.zeros(k, bool)
        self.batches_built = 0

    def _reset(self, si: int) -> None:
        n, L, rng = self.sizes[si], self.seq_len, self.rng
        max_phase = min(L - 1, max(0, n - L - 1))
        phase = int(rng.integers(max_phase + 1)) if max_phase > 0 else 0
        bc = (n - 1 - phase) // L
        start = int(rng.integers(bc)) if bc > 1 else 0
        stride = 1
        if bc > 1:
            while True:
                stride = int(rng.integers(1, bc))
                if math.gcd(stride, bc) == 1:
                    break
        self.phase[si], self.bc[si], self.next[si] = phase, bc, 0
        self.start[si], self.stride[si], self.init[si] = start, stride, True

    def _take(self, si: int, count: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        while count > 0:
            if not self.init[si] or self.next[si] >= self.bc[si]:
                self._reset(si)
            bc, nxt = int(self.bc[si]), int(self.next[si])
            k = min(count, bc - nxt)
            start, stride, phase = int(self.start[si]), int(self.stride[si]), int(self.phase[si])
            for j in range(nxt, nxt + k):
                out.append((si, phase + ((start + j * stride) % bc) * self.seq_len))
            self.next[si] = nxt + k
            count -= k
        return out

    def next_global(self, gns: int, world_size: int) -> list[tuple[int, int]]:
        """Build one global batch of exactly gns windows, as a list of (shard index, token offset)."""
        rng = self.rng
        progress = min(self.batches_built / RAMP_BATCHES, 1.0)
        e = len(self.eligible)
        remaining = np.empty(e, np.float64)
        for j, si in enumerate(self.eligible):
            remaining[j] = max(int(self.bc[si] - self.next[si]), 1) if self.init[si] else self.base_blocks[j]
        alpha = 0.90 - 0.40 * progress
        w = np.power(remaining, alpha)
        total = w.sum()
        p = w / total if (np.isfinite(total) and total > 0) else np.full(e, 1.0 / e)
        low = min(max(8, world_size), e, gns)
        high = min(max(32, 8 * world_size), e, gns)
        mix = max(1, min(round(low + progress * (high - low)), e, gns))
        chosen = rng.choice(e, size=mix, replace=False, p=p)
        counts = np.ones(mix, np.int64)
        if gns > mix:
            pc = p[chosen]
            counts += rng.multinomial(gns - mix, pc / pc.sum())
        perm = rng.permutation(mix)
        chosen, counts = chosen[perm], counts[perm]
        buckets = []
        for j, c in zip(chosen.tolist(), counts.tolist()):
            bucket = self._take(self.eligible[j], int(c))
            if len(bucket) > 1:
                bucket = [bucket[i] for i in rng.permutation(len(bucket)).tolist()]
            buckets.append(bucket)
        windows: list[tuple[int, int]] = []
        active = [b for b in buckets if b]
        while active:
            order = rng.permutation(len(active)).tolist()
            still = []
            for i in order:
                b = active[i]
                windows.append(b.pop())
                if b:
                    still.append(b)
            active = still
        self.batches_built += 1
        return windows


# ---------------------------------------------------------------------------------------------
# the training loader
class CoprimeStrideLoader:
    """Files + sampler + rank split.

    world_size/grad_accum are the sampler's view of the world. With `emulate_world=8` on fewer
    GPUs, one 8-rank global batch is built per optimizer step and the micro-batches are the
    slices windows[e::8] of the emulated ranks e = rank*grad_accum + micro (pipeline.md §1.4).
    """

    def __init__(self, data_path: str, seq_len: int, rank: int, world_size: int, grad_accum: int,
                 device: torch.device | str = "cpu", emulate_world: int = 0):
        self.files = find_shards(data_path, "train")
        self.sizes = [read_header(p) for p in self.files]
        self.sampler = CoprimeStrideSampler(self.sizes, path_seed(self.files), seq_len)
        self.seq_len, self.rank, self.world, self.accum = seq_len, rank, world_size, grad_accum
        self.device = torch.device(device)
        self.emulate = emulate_world if emulate_world and emulate_world != world_size else 0
        self._pending: list[list[tuple[int, int]]] = []
        self._gns = None

    def _windows_to_batch(self, windows) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.seq_len
        buf = np.empty((len(windows), L + 1), dtype=np.int64)
        for row, (si, off) in enumerate(windows):
            buf[row] = shard_memmap(self.files[si], self.sizes[si])[off: off + L + 1]
        t = torch.from_numpy(buf)
        x, y = t[:, :-1], t[:, 1:]
        non_blocking = self.device.type == "cuda"
        return (x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking))

    def next_batch(self, global_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch for this rank: x, y int64 [num_seqs, seq_len]."""
        if self.emulate:
            if not self._pending:
                w = self.emulate
                local = global_tokens // w  # one emulated rank, no accumulation
                gns = (local // self.seq_len) * w
                windows = self.sampler.next_global(gns, w)
                per_rank = w // self.world
                mine = range(self.rank * per_rank, (self.rank + 1) * per_rank)
                self._pending = [windows[e::w] for e in mine]
            return self._windows_to_batch(self._pending.pop(0))
        if self._gns is None:  # fixed at the first call, as in the record
            local = global_tokens // (self.world * self.accum)
            self._gns = (local // self.seq_len) * self.world
        windows = self.sampler.next_global(self._gns, self.world)
        return self._windows_to_batch(windows[self.rank::self.world])


# ---------------------------------------------------------------------------------------------
def load_validation_tokens(data_path: str, seq_len: int) -> torch.Tensor:
    """All val shards concatenated (uint16 on CPU), truncated to ((n-1)//L)*L + 1 tokens."""
    parts = [load_shard(p) for p in find_shards(data_path, "val")]
    tokens = np.concatenate(parts)
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ShardError("val_too_short", f"validation split has {tokens.size} tokens, needs > {seq_len}")
    return torch.from_numpy(tokens[: usable + 1].astype(np.int32)).to(torch.int32)
