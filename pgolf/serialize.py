"""The submission artifact: quantized tensors + routing meta -> one compressed blob (spec §5.7, §5.8).

The reference pickles everything with torch.save and runs one LZMA preset-6 pass over the 27 MB payload
(about 49 s on one core). Measured on int6 payloads (bench/RESULTS.md), three things make it both faster
and smaller:
- one compressed stream PER TENSOR: each adaptive model fits one matrix's value distribution, and the
  streams compress in parallel threads (liblzma and libzstd both release the GIL);
- each stream is compressed twice -- zstd level 19 (Huffman literals sit close to the order-0 entropy of
  low-entropy int6 bytes) and LZMA2 with lc=0/lp=0/pb=0 (int6 values are nearly independent bytes, so
  literal contexts only dilute statistics) -- and the smaller one is kept;
- a small JSON header instead of a pickle, and fp16/fp32 tensors byte-shuffled (high bytes together).

Layout: MAGIC | u32 header length | LZMA(header JSON) | stream 0 | stream 1 | ...
Every stream carries its raw length and CRC32 in the header, so any corruption is a clear ArtifactError.
"""
from __future__ import annotations

import json
import lzma
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

MAGIC = b"PGOLFQ1\n"
VERSION = 1
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 0, "lp": 0, "pb": 0}]
SMALL_TENSOR_BYTES = 1 << 16
MAX_RAW_BYTES = 1 << 30  # a 16 MB artifact never holds more; refuse headers that claim otherwise  # tensors below this share one stream (per-stream overhead matters there)
_DTYPES = {
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


class ArtifactError(ValueError):
    """The blob is not a readable pgolf artifact. `code` is stable for callers and the API."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _raw_bytes(t: torch.Tensor) -> tuple[bytes, bool]:
    """Tensor -> bytes; multi-byte dtypes are byte-shuffled (all byte-0s, then all byte-1s, ...)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    u8 = flat.view(torch.uint8).numpy()
    width = flat.element_size()
    if width == 1 or flat.numel() == 0:
        return u8.tobytes(), False
    return u8.reshape(-1, width).T.tobytes(), True


def _from_raw(buf: bytes, dtype: torch.dtype, shape: list[int], shuffled: bool) -> torch.Tensor:
    width = torch.empty((), dtype=dtype).element_size()
    if not buf:
        return torch.empty(shape, dtype=dtype)
    a = np.frombuffer(buf, dtype=np.uint8)
    if shuffled:
        a = a.reshape(width, -1).T
    a = np.ascontiguousarray(a).copy()
    return torch.from_numpy(a).view(dtype).reshape(shape)


ZSTD_LEVEL = 19
CODECS = ("zstd", "lzma")


def _compress_with(codec: str, raw: bytes) -> bytes:
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False).compress(raw)
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=FILTERS)


def _compress(raw: bytes, codecs=CODECS) -> tuple[str, bytes]:
    """The smallest encoding among `codecs` (ties go to the first)."""
    best = None
    for codec in codecs:
        out = _compress_with(codec, raw)
        if best is None or len(out) < len(best[1]):
            best = (codec, out)
    return best


def _decompress(codec: str, buf: bytes, rlen: int) -> bytes:
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(buf, max_output_size=rlen)
    if codec == "lzma":
        return lzma.decompress(buf, format=lzma.FORMAT_RAW, filters=FILTERS)
    raise ValueError(f"unknown codec {codec}")


def pack(quantized: dict[str, torch.Tensor], meta: dict[str, object], threads: int | None = None,
         codecs=CODECS) -> bytes:
    """Serialize (tensors, meta) into the artifact bytes. Deterministic for equal inputs."""
    entries, streams_raw = [], []
    small: list[bytes] = []
    small_len = 0
    for name, t in quantized.items():
        if t.dtype not in _DTYPE_NAMES:
            raise ArtifactError("artifact_bad_dtype", f"tensor {name} has unsupported dtype {t.dtype}")
        raw, shuffled = _raw_bytes(t)
        e = {"name": name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "shuffled": shuffled,
             "nbytes": len(raw)}
        if len(raw) < SMALL_TENSOR_BYTES:
            e["stream"], e["offset"] = 0, small_len
            small.append(raw)
            small_len += len(raw)
        else:
            streams_raw.append(raw)
            e["stream"], e["offset"] = len(streams_raw), 0  # stream 0 is the shared small-tensor stream
        entries.append(e)
    streams_raw.insert(0, b"".join(small))
    workers = threads or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        encoded = list(ex.map(lambda r: _compress(r, codecs), streams_raw))
    comp = [c for _, c in encoded]
    header = {
        "version": VERSION, "meta": meta, "tensors": entries,
        "streams": [{"codec": k, "clen": len(c), "rlen": len(r), "crc": zlib.crc32(r)}
                    for (k, c), r in zip(encoded, streams_raw)],
    }
    hdr = lzma.compress(json.dumps(header, separators=(",", ":")).encode(), format=lzma.FORMAT_XZ,
                        check=lzma.CHECK_CRC32, preset=9)
    return b"".join([MAGIC, struct.pack("<I", len(hdr)), hdr, *comp])


def unpack(blob: bytes, threads: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Inverse of pack. Raises ArtifactError (never a bare traceback) on anything malformed."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ArtifactError("artifact_not_bytes", "the artifact must be bytes")
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        raise ArtifactError("artifact_bad_magic", "not a pgolf artifact (magic bytes missing)")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    pos = len(MAGIC) + 4
    if pos + hlen > len(blob):
        raise ArtifactError("artifact_truncated", "artifact is shorter than its header says")
    try:
        header = json.loads(lzma.decompress(blob[pos:pos + hlen]))
        streams, entries, meta = header["streams"], header["tensors"], header["meta"]
        if header.get("version") != VERSION:
            raise ArtifactError("artifact_bad_version", f"unsupported artifact version {header.get('version')}")
        if any(not (0 <= int(st["rlen"]) <= MAX_RAW_BYTES) or int(st["clen"]) < 0 for st in streams):
            raise ArtifactError("artifact_corrupt", "artifact header declares impossible stream sizes")
    except ArtifactError:
        raise
    except Exception as exc:  # lzma.LZMAError, JSON errors, missing keys: all mean a damaged header
        raise ArtifactError("artifact_corrupt", f"artifact header is damaged ({type(exc).__name__})") from None
    pos += hlen
    chunks = []
    for s in streams:
        chunks.append(blob[pos:pos + s["clen"]])
        pos += s["clen"]
    if pos != len(blob):
        raise ArtifactError("artifact_truncated", f"artifact length {len(blob)} does not match its header ({pos})")

    def _one(k: int) -> bytes:
        try:
            raw = _decompress(streams[k]["codec"], chunks[k], streams[k]["rlen"])
        except Exception:  # lzma.LZMAError, zstandard.ZstdError, unknown codec
            raise ArtifactError("artifact_corrupt", f"stream {k} does not decompress") from None
        if len(raw) != streams[k]["rlen"] or zlib.crc32(raw) != streams[k]["crc"]:
            raise ArtifactError("artifact_corrupt", f"stream {k} fails its length/CRC check")
        return raw

    workers = threads or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        raws = list(ex.map(_one, range(len(chunks))))
    out: dict[str, torch.Tensor] = {}
    try:
        for e in entries:
            raw = raws[e["stream"]][e["offset"]:e["offset"] + e["nbytes"]]
            if len(raw) != e["nbytes"]:
                raise ValueError("short tensor")
            out[e["name"]] = _from_raw(raw, _DTYPES[e["dtype"]], e["shape"], e["shuffled"])
    except Exception as exc:
        raise ArtifactError("artifact_corrupt", f"tensor table is inconsistent ({type(exc).__name__})") from None
    return out, meta


def artifact_bytes(blob: bytes, code_files) -> dict[str, int]:
    """Submission size per §5.8, generalised to many files: blob bytes + the bytes of EVERY code file.

    `code_files` is an iterable of paths (their on-disk bytes count) or of (name, text) pairs (UTF-8).
    """
    code = 0
    for f in code_files:
        if isinstance(f, tuple):
            code += len(f[1].encode("utf-8") if isinstance(f[1], str) else f[1])
        else:
            code += Path(f).stat().st_size
    return {"model_bytes": len(blob), "code_bytes": code, "total_bytes": len(blob) + code}


def reference_lzma_bytes(quantized: dict[str, torch.Tensor], meta: dict[str, object]) -> bytes:
    """The reference artifact (torch.save of {"w", "m"} + LZMA preset 6), for size/speed comparisons."""
    import io

    buf = io.BytesIO()
    torch.save({"w": quantized, "m": meta}, buf)
    return lzma.compress(buf.getvalue(), preset=6)
