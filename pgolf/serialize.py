"""The submission artifact: quantized tensors + routing meta -> one compressed blob (spec §5.7, §5.8).

The reference pickles everything with torch.save and runs one LZMA preset-6 pass over the 27 MB payload
(about 45 s on one core). Measured on int6 payloads (bench/RESULTS.md), this is both faster and smaller:
- the big int8 tensors (int6 GPTQ values, int8 embeddings) are nearly independent bytes drawn from one
  distribution per tensor, so a static order-0 model per tensor is close to optimal: they go into one
  interleaved rANS stream (numpy-vectorized across lanes), ~2 % under zstd-19 and ~8 % under LZMA;
- every other tensor gets its own stream, compressed with zstd-19 and with LZMA2 (lc=0/lp=0/pb=0: literal
  contexts only dilute statistics on such bytes), keeping the smaller; streams compress in parallel threads
  (liblzma and libzstd release the GIL), and rANS is only kept if it beats those per-tensor streams;
- a small JSON header instead of a pickle, and multi-byte tensors byte-shuffled (high bytes together).

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


# rANS for the big int8 tensors (int6 GPTQ values, int8 embeddings): a static order-0 model per tensor
# reaches the per-tensor entropy, which on int6 payloads is ≈ 2-3 % under zstd-19 and ≈ 9 % under LZMA.
RANS_LANES = 4096  # at most: 16 KB of final states; 26 M symbols take ≈ 6.3 k numpy steps
RANS_PREC = 14     # frequency precision (2^14 slots; 256-symbol alphabets fit with room to spare)
RANS_L = 1 << 16   # state interval [2^16, 2^32), 16-bit renormalization


def _quantize_freqs(counts: np.ndarray) -> np.ndarray:
    """Counts -> frequencies summing to 2^PREC, every present symbol ≥ 1 (the largest absorbs rounding)."""
    M = 1 << RANS_PREC
    counts = counts.astype(np.int64)
    total = counts.sum()
    f = np.where(counts > 0, np.maximum(1, counts * M // max(total, 1)), 0)
    diff = M - int(f.sum())
    order = np.argsort(-f, kind="stable")
    if diff >= 0:
        f[order[0]] += diff
    else:
        for i in order:
            take = min(-diff, int(f[i]) - 1)
            f[i] -= take
            diff += take
            if diff == 0:
                break
    return f


def _rans_lanes(n: int) -> int:
    """Lanes for n symbols: enough steps' worth of work per numpy call, few states to store when n is small."""
    k = 16
    while k < RANS_LANES and k * 2048 < n:
        k *= 2
    return k


def _rans_encode(sym: np.ndarray, tab: np.ndarray, freqs: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved rANS: symbol i rides lane i % LANES, all lanes step together (numpy-vectorized).

    sym uint8 [n], tab [n] the table id of each symbol, freqs [ntab, 256]. Symbols are encoded last to
    first; each lane emits at most one 16-bit word per step, stored per step in lane order, so the
    decoder (first to last) reads each step's block in the same lane order. -> (final states, words)
    """
    n = sym.size
    T = -(-n // K)
    cums = np.concatenate([np.zeros((freqs.shape[0], 1), np.int64), np.cumsum(freqs, 1)[:, :-1]], 1)
    pad = T * K - n
    S = np.concatenate([sym, np.zeros(pad, sym.dtype)]).reshape(T, K)
    Tb = np.concatenate([tab, np.zeros(pad, tab.dtype)]).reshape(T, K)
    act_last = np.arange(K) < (K - pad)
    fr = freqs.astype(np.uint64)
    cu = cums.astype(np.uint64)
    x = np.full(K, RANS_L, dtype=np.uint64)
    out = []
    for t in range(T - 1, -1, -1):
        f = fr[Tb[t], S[t]]
        c = cu[Tb[t], S[t]]
        if t == T - 1 and pad:
            f = np.where(act_last, f, np.uint64(1))
            c = np.where(act_last, c, np.uint64(0))
        emit = x >= (f << np.uint64(32 - RANS_PREC))
        if t == T - 1 and pad:
            emit &= act_last
        out.append((x[emit] & np.uint64(0xFFFF)).astype(np.uint16))
        x = np.where(emit, x >> np.uint64(16), x)
        xn = ((x // f) << np.uint64(RANS_PREC)) + (x % f) + c
        x = np.where(act_last, xn, x) if (t == T - 1 and pad) else xn
    out.reverse()
    return x.astype(np.uint32), np.concatenate(out) if out else np.zeros(0, np.uint16)


def _rans_decode(states: np.ndarray, words: np.ndarray, tab: np.ndarray, freqs: np.ndarray, K: int) -> np.ndarray:
    n = tab.size
    T = -(-n // K)
    M = 1 << RANS_PREC
    cums = np.concatenate([np.zeros((freqs.shape[0], 1), np.int64), np.cumsum(freqs, 1)[:, :-1]], 1)
    slot2sym = np.zeros((freqs.shape[0], M), np.uint8)
    for i in range(freqs.shape[0]):
        slot2sym[i] = np.repeat(np.arange(256, dtype=np.uint8), freqs[i])
    pad = T * K - n
    Tb = np.concatenate([tab, np.zeros(pad, tab.dtype)]).reshape(T, K)
    act_last = np.arange(K) < (K - pad)
    fr, cu = freqs.astype(np.uint64), cums.astype(np.uint64)
    x = states.astype(np.uint64)
    out = np.empty((T, K), np.uint8)
    w = words.astype(np.uint64)
    ptr = 0
    mask = np.uint64(M - 1)
    for t in range(T):
        tb = Tb[t]
        slot = x & mask
        s = slot2sym[tb, slot]
        out[t] = s
        xn = fr[tb, s] * (x >> np.uint64(RANS_PREC)) + slot - cu[tb, s]
        x = np.where(act_last, xn, x) if (t == T - 1 and pad) else xn
        need = x < np.uint64(RANS_L)
        k = int(need.sum())
        if k:
            x[need] = (x[need] << np.uint64(16)) | w[ptr:ptr + k]
            ptr += k
    if ptr != w.size or (x != RANS_L).any():  # every lane must end where the encoder started
        raise ValueError("rANS stream is inconsistent")
    return out.reshape(-1)[:n]


def _rans_pack(raws: list[bytes]) -> bytes:
    """Many int8 tensors -> one rANS stream: sizes | zlib(freq tables) | lane states | words."""
    sizes = [len(r) for r in raws]
    sym = np.frombuffer(b"".join(raws), dtype=np.uint8)
    tab = np.repeat(np.arange(len(raws), dtype=np.int32), sizes)
    freqs = np.stack([_quantize_freqs(np.bincount(np.frombuffer(r, np.uint8), minlength=256)) for r in raws])
    lanes = _rans_lanes(sym.size)
    states, words = _rans_encode(sym, tab, freqs, lanes)
    ftab = zlib.compress(freqs.astype("<u2").tobytes(), 9)
    return b"".join([struct.pack("<III", lanes, len(raws), len(ftab)), np.asarray(sizes, "<u4").tobytes(), ftab,
                     states.astype("<u4").tobytes(), words.astype("<u2").tobytes()])


def _rans_unpack(buf: bytes) -> bytes:
    lanes, ntab, flen = struct.unpack_from("<III", buf, 0)
    if not 1 <= lanes <= RANS_LANES:
        raise ValueError("bad rANS lane count")
    pos = 12
    sizes = np.frombuffer(buf, "<u4", ntab, pos).astype(np.int64)
    pos += 4 * ntab
    freqs = np.frombuffer(zlib.decompress(buf[pos:pos + flen]), "<u2").reshape(ntab, 256).astype(np.int64)
    pos += flen
    if (freqs.sum(1) != (1 << RANS_PREC)).any():
        raise ValueError("bad rANS frequency table")
    states = np.frombuffer(buf, "<u4", lanes, pos)
    pos += 4 * lanes
    words = np.frombuffer(buf[pos:], "<u2")
    tab = np.repeat(np.arange(ntab, dtype=np.int32), sizes)
    return _rans_decode(states, words, tab, freqs, lanes).tobytes()


ZSTD_LEVEL = 19
CODECS = ("rans", "zstd", "lzma")


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
    if codec == "rans":
        return _rans_unpack(buf)
    raise ValueError(f"unknown codec {codec}")


def pack(quantized: dict[str, torch.Tensor], meta: dict[str, object], threads: int | None = None,
         codecs=CODECS) -> bytes:
    """Serialize (tensors, meta) into the artifact bytes. Deterministic for equal inputs."""
    items = []
    for name, t in quantized.items():
        if t.dtype not in _DTYPE_NAMES:
            raise ArtifactError("artifact_bad_dtype", f"tensor {name} has unsupported dtype {t.dtype}")
        raw, shuffled = _raw_bytes(t)
        items.append(({"name": name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "shuffled": shuffled,
                       "nbytes": len(raw)}, raw))
    general = tuple(c for c in codecs if c != "rans") or ("zstd",)
    small = [it for it in items if len(it[1]) < SMALL_TENSOR_BYTES]
    big = [it for it in items if len(it[1]) >= SMALL_TENSOR_BYTES]
    pick = [k for k, it in enumerate(big) if it[0]["dtype"] == "int8"] if "rans" in codecs else []
    workers = threads or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        # rANS first: its numpy loop overlaps with the codec threads, which release the GIL
        rans_job = ex.submit(_rans_pack, [big[k][1] for k in pick]) if pick else None
        per_tensor = list(ex.map(lambda r: _compress(r, general), [b"".join(r for _, r in small)] + [r for _, r in big]))
        rans = rans_job.result() if rans_job else None
    groups = [(small, *per_tensor[0])] + [([it], *enc) for it, enc in zip(big, per_tensor[1:])]
    # all big int8 tensors in one rANS stream, if that beats their per-tensor streams
    if rans is not None and len(rans) < sum(len(per_tensor[1 + k][1]) for k in pick):
        keep = [g for k, g in enumerate(groups[1:]) if k not in set(pick)]
        groups = [groups[0], ([big[k] for k in pick], "rans", rans)] + keep
    encoded, streams_raw = [], []
    for si, (members, codec, comp) in enumerate(groups):
        off = 0
        for e, raw in members:
            e["stream"], e["offset"] = si, off
            off += len(raw)
        encoded.append((codec, comp))
        streams_raw.append(b"".join(raw for _, raw in members))
    entries = [e for e, _ in items]
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
