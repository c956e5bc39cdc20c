"""Recovering validation positions from target tensors (worker/tracer ValIndex)."""
from __future__ import annotations

import numpy as np

from worker.tracer import ValIndex, load_val_stream, merge_ranges, read_trace, write_shard


def _stream(n=50_000, seed=0):
    return np.random.default_rng(seed).integers(0, 1024, size=n).astype(np.int64)


def test_rows_sliding_windows_and_padding():
    val = _stream()
    ix = ValIndex(val)
    rows = np.stack([val[s + 1:s + 1 + 256] for s in (0, 64, 128, 40_000)])
    r, unres = ix.ranges(rows)
    assert r == [[1, 385], [40_001, 40_257]] and unres == 0
    # a short tail window padded with zeros: only its real tokens are attributed
    tail = np.zeros(256, dtype=np.int64)
    tail[:100] = val[-100:]
    r, unres = ix.ranges(tail)
    assert r == [[val.size - 100, val.size]] and unres == 156
    # unmerged: each window its own range
    rows_r, _ = ix.ranges(rows[:3], merge=False)
    assert rows_r == [[1, 257], [65, 321], [129, 385]]


def test_tokens_not_in_the_stream_are_unattributed():
    ix = ValIndex(_stream())
    other = _stream(5000, seed=1).reshape(10, 500)
    assert ix.ranges(other) == ([], 5000)
    # a run shorter than MIN_RUN that happens to match is not attributed either
    val = ix.stream
    mixed = other[0].copy()
    mixed[100:116] = val[1000:1016]
    assert ix.ranges(mixed)[0] == []


def test_large_stream_uses_a_sparse_index_and_still_resolves_every_offset():
    val = _stream(5_000_000, seed=2)
    ix = ValIndex(val)
    assert ix.stride == 16 and ix.keys.size <= val.size // 16 + 1
    for start in (3, 17, 1_234_567, val.size - 40):
        end = min(start + 2048, val.size)
        r, unres = ix.ranges(val[start:end])
        assert r == [[start, end]] and unres == 0


def test_shards_round_trip_and_trace_reading(tmp_path):
    a, b = _stream(3000, 3), _stream(2000, 4)
    write_shard(tmp_path / "fineweb_val_000000.bin", a)
    write_shard(tmp_path / "fineweb_val_000001.bin", b)
    write_shard(tmp_path / "fineweb_train_000000.bin", a)
    s = load_val_stream(tmp_path)
    assert s.size == 5000 and (s[:3000] == a).all() and (s[3000:] == b).all()
    assert merge_ranges([[5, 9], [0, 3], [3, 4], [8, 12]]) == [[0, 4], [5, 12]]
    tr = tmp_path / "t.jsonl"
    tr.write_text('{"e":"b","t":2}\n{"e":"a","t":1}\nnot json\n{"e":"c","t":3')
    assert [e["e"] for e in read_trace(tr)] == ["a", "b"]
    assert read_trace(tmp_path / "missing.jsonl") == []


def test_batched_resolution_equals_per_call_resolution():
    val = _stream(100_000, seed=5)
    ix = ValIndex(val)
    calls = [val[s + 1:s + 65] for s in range(2048, 2048 + 64 * 40, 64)]   # sliding tails, contiguous
    calls.append(_stream(64, seed=9))                                        # not in the stream
    calls.append(val[50_000:52_048])                                        # a whole window
    flat = np.concatenate(calls)
    bounds = np.cumsum([0] + [c.size for c in calls]).tolist()
    batched = ix.ranges_by_segment(flat, bounds)
    single = [ix.ranges(c, merge=False) for c in calls]
    assert [(r, u) for r, u, _ in batched] == [(r, u) for r, u in single]
    assert batched[0] == ([[2049, 2113]], 0, []) and batched[-2] == ([], 64, [])


def test_duplicated_text_longest_match_wins_and_equal_copies_are_alternatives():
    val = _stream(60_000, seed=6)
    val[40_000:40_100] = val[10_000:10_100]          # a 100-token passage appears twice
    ix = ValIndex(val)
    # a window that covers the second copy and runs past it: its true place wins
    r, unres = ix.ranges(val[39_950:40_200], merge=False)
    assert r == [[39_950, 40_200]] and unres == 0 and ix.ambiguous(val[39_950:40_200]) == []
    # a window inside the duplicated passage: one copy reported, the other as an alternative
    inner = val[40_010:40_074]
    (start, end), = ix.ranges(inner, merge=False)[0]
    amb = ix.ambiguous(inner)
    assert end - start == 64 and amb and sorted([start] + amb[0][2]) == [10_010, 40_010]
