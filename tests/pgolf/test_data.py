"""Shard format and the coprime-stride sampler (pipeline.md §1), with the spec's bit-exact test vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgolf.data import (CoprimeStrideLoader, CoprimeStrideSampler, ShardError, find_shards, load_validation_tokens,
                        path_seed, read_header, write_shard)

SPEC_PATHS = [f"data/datasets/fineweb10B_sp1024/fineweb_train_{i:06d}.bin" for i in range(80)]


@pytest.fixture(scope="module")
def spec_sampler_batches():
    s = CoprimeStrideSampler([10**8] * 80, path_seed(SPEC_PATHS), 2048)
    return [s.next_global(384, 8) for _ in range(3)]


def test_seed_from_path_strings():
    assert path_seed(SPEC_PATHS) == 17327015384875681392
    # './' must already be gone (pathlib rendering); a different string changes the data order
    assert path_seed(["./" + p for p in SPEC_PATHS]) != path_seed(SPEC_PATHS)


def test_spec_test_vectors(spec_sampler_batches):
    b1, b2, b3 = spec_sampler_batches
    assert b1[:6] == [(21, 30976504), (57, 4560374), (60, 93709320), (74, 45995222), (8, 36695637), (2, 18413386)]
    assert b1[0::8][:4] == [(21, 30976504), (74, 91225302), (74, 35329238), (74, 65379542)]
    assert b2[0] == (6, 8296411) and b3[0] == (16, 52305333)
    assert all(len(b) == 384 for b in (b1, b2, b3))
    assert len({s for s, _ in b1}) == 8  # the first batch mixes 8 shards (W=8)


def test_blocks_are_a_permutation_with_no_repeats():
    """A shard of exactly bc blocks is visited once per permutation; windows stay in range."""
    n, L = 50 * 16 + 1 + 7, 16
    s = CoprimeStrideSampler([n], seed=123, seq_len=L)
    first = s._take(0, 1)[0]
    phase = first[1] % L
    bc = int(s.bc[0])
    rest = s._take(0, bc - 1)
    offsets = [first[1]] + [o for _, o in rest]
    assert sorted(offsets) == [phase + b * L for b in range(bc)]
    assert all(o + L + 1 <= n for o in offsets)
    assert math.gcd(int(s.stride[0]), bc) == 1
    s._take(0, 1)  # exhausted: the next take resets the cursor with fresh draws
    assert int(s.next[0]) == 1


def test_mix_ramps_and_batches_are_exact_size():
    s = CoprimeStrideSampler([10**6] * 40, seed=7, seq_len=64)
    s.batches_built = 1800  # full ramp: mix = min(32, E=40, gns)
    b = s.next_global(100, 1)
    assert len(b) == 100 and len({si for si, _ in b}) == 32


def _write_dataset(tmp_path, sizes, val=5000):
    rng = np.random.default_rng(0)
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", rng.integers(0, 1024, n))
    write_shard(tmp_path / "fineweb_val_000000.bin", rng.integers(0, 1024, val))


def test_loader_windows_match_sampler_and_rank_split(tmp_path):
    _write_dataset(tmp_path, [20000, 9000, 30000])
    L = 64
    world, accum = 2, 4
    global_tokens = 8 * L * 2  # 2 sequences per micro-batch per rank
    loaders = [CoprimeStrideLoader(str(tmp_path), L, r, world, accum) for r in range(world)]
    files = find_shards(str(tmp_path), "train")
    ref = CoprimeStrideSampler([read_header(f) for f in files], path_seed(files), L)
    windows = ref.next_global(2 * world, world)
    data = [np.fromfile(f, dtype="<u2", offset=1024) for f in files]
    for r, loader in enumerate(loaders):
        x, y = loader.next_batch(global_tokens)
        assert x.shape == (2, L) and x.dtype == torch.int64
        for row, (si, off) in enumerate(windows[r::world]):
            np.testing.assert_array_equal(x[row].numpy(), data[si][off:off + L])
            np.testing.assert_array_equal(y[row].numpy(), data[si][off + 1:off + L + 1])


def test_emulated_world_matches_eight_rank_stream(tmp_path):
    """W=8 emulation on 2 ranks: micro-batch k of rank r is emulated rank r*4+k's slice of one 8-rank batch."""
    _write_dataset(tmp_path, [50000, 40000])
    L, global_tokens = 32, 8 * 32 * 3
    files = find_shards(str(tmp_path), "train")
    ref = CoprimeStrideSampler([read_header(f) for f in files], path_seed(files), L)
    windows = ref.next_global(3 * 8, 8)
    data = [np.fromfile(f, dtype="<u2", offset=1024) for f in files]
    loader = CoprimeStrideLoader(str(tmp_path), L, rank=1, world_size=2, grad_accum=4, emulate_world=8)
    for k in range(4):
        x, _ = loader.next_batch(global_tokens)
        expect = np.stack([data[si][off:off + L] for si, off in windows[4 + k::8]])
        np.testing.assert_array_equal(x.numpy(), expect)
    assert loader.sampler.batches_built == 1  # one global batch per optimizer step


def test_validation_tokens_truncate(tmp_path):
    _write_dataset(tmp_path, [5000], val=1000)
    v = load_validation_tokens(str(tmp_path), 128)
    assert v.numel() == (999 // 128) * 128 + 1


@pytest.mark.parametrize("corrupt,code", [
    (lambda b: b[:100], "shard_short_header"),
    (lambda b: b"\x00\x00\x00\x00" + b[4:], "shard_bad_magic"),
    (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "shard_bad_version"),
    (lambda b: b[:-2], "shard_bad_size"),
    (lambda b: b + b"\x00\x00", "shard_bad_size"),
])
def test_shard_validation_errors(tmp_path, corrupt, code):
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, np.arange(100))
    assert read_header(p) == 100
    p.write_bytes(corrupt(p.read_bytes()))
    with pytest.raises(ShardError) as e:
        read_header(p)
    assert e.value.code == code


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(ShardError) as e:
        find_shards(str(tmp_path), "train")
    assert e.value.code == "no_shards"


def test_tokenize_cli_writes_shards(tmp_path, shared_dir, capsys):
    """Text -> BOS-prefixed uint16 shards that the loader and the val reader accept."""
    from pgolf.tokenize import main

    src = tmp_path / "text.txt"
    src.write_text("\n\n".join(f"document number {i} says hello to the world" for i in range(30)))
    model = shared_dir / "data/tokenizers/fineweb_1024_bpe.model"
    out = tmp_path / "out"
    assert main(["--input", str(src), "--out", str(out), "--model", str(model), "--val-docs", "5"]) == 0
    val = np.fromfile(out / "fineweb_val_000000.bin", dtype="<u2", offset=1024)
    train = np.fromfile(out / "fineweb_train_000000.bin", dtype="<u2", offset=1024)
    assert (val == 1).sum() == 5 and (train == 1).sum() == 25 and val[0] == 1 and train[0] == 1
    assert read_header(out / "fineweb_train_000000.bin") == train.size
    assert main(["--input", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no_input" in capsys.readouterr().err


def test_tokenize_trains_a_byte_fallback_model(tmp_path):
    from pgolf.tokenize import main

    src = tmp_path / "t.txt"
    src.write_text("\n\n".join("the cat sat on the mat with a hat " * 5 for _ in range(50)))
    assert main(["--input", str(src), "--out", str(tmp_path / "o"), "--vocab-size", "300", "--val-docs", "3"]) == 0
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "o" / "tokenizer.model"))
    assert sp.vocab_size() == 300 and sp.is_byte(4) and sp.bos_id() == 1
