"""Helpers shared by the in-run tracer (`sitecustomize.py`, loaded by file path inside the
sandbox) and by the worker that reads traces back.

Standard library at import time; numpy is imported inside the functions that need it, so a
process that never touches validation data pays nothing for it.

Position recovery: a scoring call's target tensor is a slice (or a batch of slices) of the
validation token stream. We index the stream by a hash of the 8 tokens starting at every K-th
position (K = 1 for small streams, up to 16 for the full 62M-token split: a few tens of MB per
process), hash every 8-gram of the targets, and each hit gives an alignment `val_pos - target_pos`;
the alignment is then checked token by token and only runs of at least MIN_RUN equal tokens
count. Result: the half-open ranges of validation positions (indices into the stream) that the
call's targets covered.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Iterable

NGRAM = 8
MIN_RUN = 24                # shortest target run we attribute to the validation stream
HASH_MULT = 0x9E3779B97F4A7C15
SHARD_MAGIC = 20240520
HEADER_INTS = 256


def val_shards(data_path: str | os.PathLike) -> list[str]:
    return sorted(glob.glob(os.path.join(str(data_path), "fineweb_val_*.bin")))


def train_shards(data_path: str | os.PathLike) -> list[str]:
    return sorted(glob.glob(os.path.join(str(data_path), "fineweb_train_*.bin")))


def read_shard(path: str, opener=open):
    """Tokens of one shard (pipeline.md 1.1: 256 int32 header, then uint16 tokens)."""
    import numpy as np
    with opener(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype="<i4")
        if header.size != HEADER_INTS or int(header[0]) != SHARD_MAGIC or int(header[1]) != 1:
            raise ValueError(f"{path}: not a token shard")
        n = int(header[2])
        body = np.frombuffer(f.read(n * 2), dtype="<u2")
    if body.size != n:
        raise ValueError(f"{path}: short read")
    return body


def write_shard(path: str | os.PathLike, tokens) -> None:
    """Write tokens in the shard format (used by tests and calibration runs)."""
    import numpy as np
    toks = np.asarray(tokens, dtype="<u2")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, 1, toks.size
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.tobytes())


def load_val_stream(data_path: str | os.PathLike, opener=open):
    import numpy as np
    files = val_shards(data_path)
    if not files:
        return None
    return np.concatenate([read_shard(p, opener) for p in files]).astype(np.int64)


def ngram_hashes(tokens):
    """uint64 hash of the NGRAM tokens starting at each position (len(tokens) - NGRAM + 1)."""
    import numpy as np
    t = np.asarray(tokens).astype(np.uint64, copy=False)
    n = t.size - NGRAM + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(n, dtype=np.uint64)
    mult = np.uint64(HASH_MULT)
    with np.errstate(over="ignore"):
        for k in range(NGRAM):
            h = h * mult + t[k:k + n] + np.uint64(1)
    return h


def _hashes_at(tokens, pos):
    """ngram_hashes(tokens)[pos], computed only at `pos`."""
    import numpy as np
    h = np.zeros(pos.size, dtype=np.uint64)
    mult = np.uint64(HASH_MULT)
    with np.errstate(over="ignore"):
        for k in range(NGRAM):
            h = h * mult + tokens[pos + k].astype(np.uint64) + np.uint64(1)
    return h


class ValIndex:
    """Sparse 8-gram index of the validation stream; `ranges(targets)` recovers positions."""

    def __init__(self, stream, stride: int | None = None):
        import numpy as np
        self.stream = stream
        self.n = int(stream.size)
        if stride is None:
            stride = 8 if self.n <= 4_000_000 else 16
        self.stride = max(1, min(stride, MIN_RUN - NGRAM))
        pos = np.arange(0, max(self.n - NGRAM + 1, 0), self.stride, dtype=np.int64)
        h = _hashes_at(stream, pos)
        order = np.argsort(h, kind="stable")
        self.keys = h[order]
        self.pos = pos[order]
        # a presence table on the top hash bits: most target 8-grams are rejected with one
        # lookup instead of a binary search over millions of keys
        self.bits = 28 if self.keys.size > (1 << 20) else 24
        present = np.zeros(1 << self.bits, dtype=bool)
        present[(self.keys >> np.uint64(64 - self.bits)).astype(np.int64)] = True
        self.present = np.packbits(present, bitorder="little")   # 2^bits bits: <= 32 MB

    @classmethod
    def from_data_path(cls, data_path, opener=open) -> "ValIndex | None":
        s = load_val_stream(data_path, opener)
        return None if s is None or s.size < NGRAM else cls(s)

    def ranges(self, targets, max_candidates: int = 4, merge: bool = True):
        """(merged [start, end) validation ranges covered by `targets`, count of target tokens
        that could not be attributed). `targets`: any int array; it is flattened. With
        merge=False each maximal aligned run is its own range (one per window for sliding
        windows), in target order."""
        import numpy as np
        t = np.asarray(targets).reshape(-1).astype(np.int64, copy=False)
        runs = self.aligned_runs(t, max_candidates)
        out = [[a + d, b + d] for a, b, d, _ in runs]
        unres = int(t.size - sum(b - a for a, b, _, _ in runs))
        if not merge:
            return sorted(out, key=lambda r: r[0]), unres
        return merge_ranges(out), unres

    def ambiguous(self, targets) -> list[list]:
        """[[val_start, val_end, [other val starts]], ...]: runs of `targets` that occur more than
        once in the stream (duplicated text); the judge accepts any of the copies."""
        import numpy as np
        t = np.asarray(targets).reshape(-1).astype(np.int64, copy=False)
        return [[a + d, b + d, [a + x for x in alts]] for a, b, d, alts in self.aligned_runs(t) if alts]

    def ranges_by_segment(self, flat, bounds: list[int]) -> list[tuple[list[list[int]], int, list[list]]]:
        """(ranges(merge=False), unattributed, ambiguous runs) for each segment
        flat[bounds[i]:bounds[i+1]] of a concatenation, resolved in one pass (many small scoring
        calls, one host transfer)."""
        import bisect
        import numpy as np
        t = np.asarray(flat).reshape(-1).astype(np.int64, copy=False)
        runs = sorted(self.aligned_runs(t))
        starts = [r[0] for r in runs]
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows, amb, cov = [], [], 0
            k = max(bisect.bisect_right(starts, lo) - 1, 0)
            while k < len(runs) and runs[k][0] < hi:
                a, b, d, alts = runs[k]
                a2, b2 = max(a, lo), min(b, hi)
                if b2 > a2:
                    rows.append([a2 + d, b2 + d])
                    if alts:
                        amb.append([a2 + d, b2 + d, [a2 + x for x in alts]])
                    cov += b2 - a2
                k += 1
            out.append((sorted(rows), (hi - lo) - cov, amb))
        return out

    def aligned_runs(self, t, max_candidates: int = 4) -> list[tuple[int, int, int, list[int]]]:
        """Disjoint runs (flat_start, flat_end, delta, other deltas) of `t` equal to
        stream[flat + delta], each at least MIN_RUN long. Where several alignments verify, the
        longest match wins (a window's true place matches beyond a duplicated passage); equally
        long ones are kept as alternatives."""
        import numpy as np
        if t.size < NGRAM or self.keys.size == 0:
            return []
        h = ngram_hashes(t)
        top = (h >> np.uint64(64 - self.bits)).astype(np.int64)
        maybe = np.flatnonzero((self.present[top >> 3] >> (top & 7).astype(np.uint8)) & 1)
        lo = np.full(h.size, self.keys.size, dtype=np.int64)
        lo[maybe] = np.searchsorted(self.keys, h[maybe], side="left")
        hit = lo < self.keys.size
        hit[hit] = self.keys[lo[hit]] == h[hit]
        idx = np.nonzero(hit)[0]
        if idx.size == 0:
            return []
        # alignment of each hit (val position - target position), with duplicates of an 8-gram
        # in the stream giving up to max_candidates alignments
        hit_i, hit_d = [], []
        for c in range(max_candidates):
            j = lo[idx] + c
            ok = j < self.keys.size
            ok[ok] = self.keys[j[ok]] == h[idx[ok]]
            if not ok.any():
                break
            hit_i.append(idx[ok])
            hit_d.append(self.pos[j[ok]] - idx[ok])
        hi_i, hi_d = np.concatenate(hit_i), np.concatenate(hit_d)
        order = np.lexsort((hi_i, hi_d))
        hi_i, hi_d = hi_i[order], hi_d[order]
        bounds = np.flatnonzero(np.diff(hi_d)) + 1
        cands: list[tuple[int, int, int]] = []
        for grp_i, grp_d in zip(np.split(hi_i, bounds), np.split(hi_d, bounds)):
            d = int(grp_d[0])
            a = max(0, -d, int(grp_i[0]) - self.stride)
            b = min(t.size, self.n - d, int(grp_i[-1]) + NGRAM + self.stride)
            if b - a < MIN_RUN:
                continue
            eq = t[a:b] == self.stream[a + d:b + d]
            # extend the equal run past the hits (the row may continue beyond the last hit)
            while b < min(t.size, self.n - d) and eq[-1]:
                nb = min(t.size, self.n - d, b + 256)
                more = t[b:nb] == self.stream[b + d:nb + d]
                eq = np.concatenate((eq, more))
                b = nb
                if not more.all():
                    break
            padded = np.concatenate(([False], eq, [False]))
            edges = np.flatnonzero(padded[1:] != padded[:-1])
            for s_, e_ in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                if e_ - s_ >= MIN_RUN:
                    cands.append((a + s_, a + e_, d))
        cands.sort(key=lambda r: (r[0] - r[1], r[0], r[2]))     # longest first
        covered = np.zeros(t.size, dtype=bool)
        out: list[tuple[int, int, int, list[int]]] = []
        spans: dict[tuple[int, int], int] = {}
        for fa, fb, d in cands:
            seg = covered[fa:fb]
            if seg.all():
                k = spans.get((fa, fb))
                if k is not None:
                    out[k][3].append(d)
                continue
            padded = np.concatenate(([False], ~seg, [False]))
            edges = np.flatnonzero(padded[1:] != padded[:-1])
            for s_, e_ in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                if e_ - s_ >= MIN_RUN or (s_ == 0 and e_ == fb - fa):
                    covered[fa + s_:fa + e_] = True
                    spans[(fa + s_, fa + e_)] = len(out)
                    out.append((fa + s_, fa + e_, d, []))
        return out


def merge_ranges(ranges: Iterable[Iterable[int]]) -> list[list[int]]:
    rs = sorted([int(a), int(b)] for a, b in ranges if b > a)
    out: list[list[int]] = []
    for a, b in rs:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def read_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Events of a trace file, ordered by time (ranks write to one file concurrently; a torn
    last line from a killed process is skipped)."""
    p = Path(path)
    if not p.exists():
        return []
    events = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                events.append(ev)
    events.sort(key=lambda e: (e.get("t", 0.0), e.get("seq", 0)))
    return events
