"""Byte tables and the bpb formula (pipeline.md §2) on the shared tokenizer (no byte pieces) and on a
stand-in with byte-fallback pieces."""
from __future__ import annotations

import math

import pytest
import torch

from pgolf.bpb import BPBAccumulator, build_luts, bpb_from_sums, load_luts, target_bytes


@pytest.fixture(scope="module")
def sp(shared_dir):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(shared_dir / "data/tokenizers/fineweb_1024_bpe.model"))


def test_luts_count_utf8_bytes_of_real_text(sp):
    luts = build_luts(sp, 1024)
    text = "The quick brown fox jumps over the lazy dog, twice: 1234 times!"  # in-vocabulary characters
    ids = sp.encode(text)
    stream = torch.tensor([1] + ids)  # BOS starts the document, as in the shards
    prev, tgt = stream[:-1], stream[1:]
    n_bytes = int(target_bytes(prev, tgt, luts).sum())
    decoded = sp.decode(ids)
    assert 3 not in ids and decoded == text
    # every byte of the decoded text is counted exactly once; the first "▁" after BOS counts nothing
    assert n_bytes == len(decoded.encode("utf-8"))


def test_special_ids_are_boundaries_with_zero_bytes(sp):
    luts = build_luts(sp, 1024)
    for i in (0, 1, 2, 3):
        assert luts.is_boundary[i] and luts.base_bytes[i] == 0 and not luts.has_leading_space[i]
    assert not luts.is_boundary[sp.piece_to_id("▁the")] if sp.piece_to_id("▁the") != 3 else True


def test_luts_extend_past_sp_vocab(sp):
    luts = build_luts(sp, 1100)
    assert luts.base_bytes.numel() == 1100 and bool(luts.is_boundary[1050])


class FakeByteSP:
    """A tokenizer with byte-fallback pieces: ids 4..259 are <0x00>..<0xFF>."""
    pieces = ["<pad>", "<s>", "</s>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁hé", "llo", "▁"]

    def vocab_size(self):
        return len(self.pieces)

    def is_control(self, i):
        return i in (0, 1, 2)

    def is_unknown(self, i):
        return i == 3

    def is_unused(self, i):
        return False

    def is_byte(self, i):
        return 4 <= i < 260

    def id_to_piece(self, i):
        return self.pieces[i]


def test_byte_fallback_pieces_count_one_byte():
    luts = build_luts(FakeByteSP(), 263)
    assert luts.base_bytes[4 + 0xE9] == 1 and not luts.has_leading_space[4 + 0xE9]
    assert luts.base_bytes[260] == 3 and luts.has_leading_space[260]  # "▁hé": 'h' + 2-byte 'é'
    assert luts.base_bytes[262] == 0 and luts.has_leading_space[262]  # a bare "▁" is one space byte
    prev = torch.tensor([1, 260, 261])
    tgt = torch.tensor([260, 261, 262])
    # after BOS the space is not counted; elsewhere it is
    assert target_bytes(prev, tgt, luts).tolist() == [3, 3, 1]


def test_accumulator_formula():
    luts = build_luts(FakeByteSP(), 263)
    acc = BPBAccumulator()
    nll = torch.tensor([1.0, 2.0, 3.0])
    acc.add(nll, torch.tensor([1, 260, 261]), torch.tensor([260, 261, 262]), luts)
    loss, bpb = acc.result()
    assert loss == pytest.approx(2.0)
    assert bpb == pytest.approx(6.0 / (math.log(2) * 7))
    acc2 = BPBAccumulator()
    acc2.add_mean(torch.tensor(2.0), torch.tensor([1, 260, 261]), torch.tensor([260, 261, 262]), luts)
    assert acc2.result() == pytest.approx((loss, bpb))
    assert bpb_from_sums(6.0, 3.0, 7.0) == pytest.approx((2.0, bpb))


def test_load_luts_checks_vocab_and_suffix(shared_dir, tmp_path):
    path = shared_dir / "data/tokenizers/fineweb_1024_bpe.model"
    assert load_luts(str(path), 1024).base_bytes.numel() == 1024
    with pytest.raises(ValueError, match="vocab"):
        load_luts(str(path), 2048)
    with pytest.raises(ValueError, match=".model"):
        load_luts(str(tmp_path / "tok.bin"), 1024)
