"""The artifact container: bit-exact round trip, corruption detection, size vs the reference LZMA."""
from __future__ import annotations

import pytest
import torch

from pgolf import serialize
from pgolf.serialize import ArtifactError


def _payload(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = {}
    meta = {}
    for i, (r, c) in enumerate([(256, 512), (128, 512), (512, 128)]):
        w = torch.randn(r, c, generator=g) * 1.3 * torch.exp(0.3 * torch.randn(r, 1, generator=g))
        q[f"blocks.{i}.mlp.fc.weight.q"] = torch.clamp(torch.round(w), -31, 31).to(torch.int8)
        q[f"blocks.{i}.mlp.fc.weight.scale"] = (torch.rand(r, generator=g) * 0.05).half()
        meta[f"blocks.{i}.mlp.fc.weight"] = {"type": "int6"}
    q["tok_emb.weight.q"] = torch.randint(-127, 128, (300, 64), generator=g, dtype=torch.int8)
    q["tok_emb.weight.scale"] = torch.rand(300, generator=g).half()
    meta["tok_emb.weight"] = {"type": "int8"}
    odd = torch.randn(7, 3, generator=g)
    odd[0, 0], odd[0, 1], odd[0, 2] = float("nan"), -0.0, float("inf")
    q["odd_fp32"] = odd
    q["bf16"] = torch.randn(5, 9, generator=g).bfloat16()
    q["scalar"] = torch.tensor(3.5)
    q["empty"] = torch.zeros(0, 4)
    q["ints"] = torch.arange(-5, 5, dtype=torch.int64).reshape(2, 5)
    q["mask"] = torch.tensor([True, False, True])
    for k in ("odd_fp32", "bf16", "scalar", "empty", "ints", "mask"):
        meta[k] = "passthrough"
    return q, meta


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.contiguous().reshape(-1).view(torch.uint8).tolist() == b.contiguous().reshape(-1).view(torch.uint8).tolist()


def test_round_trip_is_bit_exact():
    q, meta = _payload()
    blob = serialize.pack(q, meta)
    q2, meta2 = serialize.unpack(blob)
    assert meta2 == meta
    assert list(q2) == list(q)
    for k in q:
        assert _same_bits(q[k], q2[k]), k
    assert serialize.pack(q, meta) == blob  # deterministic


@pytest.mark.parametrize("codecs", [("lzma",), ("zstd",), ("rans",)])
def test_each_codec_round_trips(codecs):
    q, meta = _payload(1)
    q2, _ = serialize.unpack(serialize.pack(q, meta, codecs=codecs))
    assert all(_same_bits(q[k], q2[k]) for k in q)


def test_not_larger_than_reference_lzma():
    q, meta = _payload(2)
    ours = serialize.pack(q, meta)
    ref = serialize.reference_lzma_bytes(q, meta)
    assert len(ours) <= len(ref)


def _code(blob: bytes, **kw) -> str:
    with pytest.raises(ArtifactError) as e:
        serialize.unpack(blob, **kw)
    return e.value.code


def test_corruption_gives_a_clear_error():
    q, meta = _payload(3)
    blob = serialize.pack(q, meta)
    assert _code(b"hello world, not an artifact") == "artifact_bad_magic"
    assert _code(blob[: len(blob) // 2]) == "artifact_truncated"
    assert _code(blob + b"\0") == "artifact_truncated"
    for pos in range(len(blob) - 1, len(blob) * 2 // 3, -len(blob) // 60):  # flips across the tensor streams
        flipped = bytearray(blob)
        flipped[pos] ^= 0x5A
        assert _code(bytes(flipped)) == "artifact_corrupt", pos
    header = bytearray(blob)
    header[len(serialize.MAGIC) + 10] ^= 0xFF  # inside the compressed header
    assert _code(bytes(header)) in ("artifact_corrupt", "artifact_truncated")
    assert _code("not bytes") == "artifact_not_bytes"


def test_unsupported_dtype_is_refused():
    with pytest.raises(ArtifactError) as e:
        serialize.pack({"c": torch.zeros(2, dtype=torch.complex64)}, {"c": "passthrough"})
    assert e.value.code == "artifact_bad_dtype"


def test_artifact_bytes_counts_every_code_file(tmp_path):
    a = tmp_path / "train.py"
    b = tmp_path / "pkg" / "model.py"
    b.parent.mkdir()
    a.write_text("print('é')\n", encoding="utf-8")
    b.write_bytes(b"x" * 1000)
    got = serialize.artifact_bytes(b"\0" * 123, [a, b, ("inline.py", "ab")])
    assert got == {"model_bytes": 123, "code_bytes": len("print('é')\n".encode()) + 1000 + 2,
                   "total_bytes": 123 + len("print('é')\n".encode()) + 1002}


def _rewrite_header(blob: bytes, edit) -> bytes:
    import json
    import lzma
    import struct

    n = len(serialize.MAGIC)
    (hlen,) = struct.unpack_from("<I", blob, n)
    header = json.loads(lzma.decompress(blob[n + 4:n + 4 + hlen]))
    edit(header)
    hdr = lzma.compress(json.dumps(header).encode())
    return serialize.MAGIC + struct.pack("<I", len(hdr)) + hdr + blob[n + 4 + hlen:]


def test_header_lies_are_caught():
    q, meta = _payload(4)
    blob = serialize.pack(q, meta)
    assert serialize.unpack(_rewrite_header(blob, lambda h: None))[1] == meta  # the helper itself is faithful
    assert _code(_rewrite_header(blob, lambda h: h.update(version=99))) == "artifact_bad_version"
    assert _code(_rewrite_header(blob, lambda h: h["streams"][1].update(rlen=2 ** 40))) == "artifact_corrupt"
    assert _code(_rewrite_header(blob, lambda h: h["streams"][1].update(codec="brotli"))) == "artifact_corrupt"
    assert _code(_rewrite_header(blob, lambda h: h["tensors"][0].update(shape=[3, 3]))) == "artifact_corrupt"


def _stream_codecs(blob: bytes) -> list[str]:
    seen = []
    _rewrite_header(blob, lambda h: seen.extend(s["codec"] for s in h["streams"]))
    return seen


def test_default_pack_entropy_codes_the_int6_tensors():
    q, meta = _payload(5)
    blob = serialize.pack(q, meta)
    assert "rans" in _stream_codecs(blob)
    assert len(blob) < len(serialize.pack(q, meta, codecs=("zstd",)))


@pytest.mark.parametrize("case", ["constant", "uniform", "rare_symbols", "odd_sizes"])
def test_rans_round_trip_edge_cases(case):
    import numpy as np

    rng = np.random.default_rng(7)
    if case == "constant":
        raws = [bytes([5]) * 70_001]
    elif case == "uniform":
        raws = [rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()]
    elif case == "rare_symbols":  # one dominant value and 255 singletons: frequency rounding must borrow
        a = np.zeros(1_000_000, dtype=np.uint8)
        a[rng.choice(a.size, 255, replace=False)] = np.arange(1, 256, dtype=np.uint8)
        raws = [a.tobytes()]
    else:
        raws = [rng.integers(-31, 32, n).astype(np.int8).tobytes() for n in (1, 4095, 4097, 65_537)]
    buf = serialize._rans_pack(raws)
    assert serialize._rans_unpack(buf) == b"".join(raws)
    if case == "constant":
        assert len(buf) < 20_000  # zero information: only the fixed lane states and the tables remain
