"""Self-extracting wrappers are decoded by parsing only; garbage and bombs leave the stub as is."""
from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import zlib
from pathlib import Path

import pytest

import rules.decode as decode_mod
from rules.decode import decode_source

ORIGINAL = '''"""A training script."""
import torch

def main():
    print("train", torch.__version__)

if __name__ == "__main__":
    main()
'''


def _lzma_b85(src: str) -> str:
    blob = base64.b85encode(lzma.compress(src.encode())).decode()
    return f"import lzma as L,base64 as B\nexec(L.decompress(B.b85decode({blob!r})))\n"


def test_nested_lzma_b85_wrappers_decode_to_the_original():
    text = ORIGINAL
    for _ in range(3):
        text = _lzma_b85(text)
    res = decode_source(text)
    assert res.text == ORIGINAL and res.decoded
    assert res.layers == ["b85decode", "lzma"] * 3
    assert not res.notes


@pytest.mark.parametrize("make", [
    # the shape records ship (PR #1394): two lines, from-import
    lambda s: ("from base64 import b85decode\nimport lzma\n"
               f"exec(lzma.decompress(b85decode({base64.b85encode(lzma.compress(s.encode())).decode()!r})))"),
    # aliases of a function
    lambda s: ("from base64 import b85decode as d\nfrom lzma import decompress as z\n"
               f"exec(z(d({base64.b85encode(lzma.compress(s.encode())).decode()!r})).decode('utf-8'))"),
    # __import__ and a literal split into concatenated pieces
    lambda s: (lambda b: "exec(__import__('zlib').decompress(__import__('base64').b64decode("
               f"{b[:10]!r} + {b[10:]!r})))")(base64.b64encode(zlib.compress(s.encode())).decode()),
    # a variable holding the blob, compile(...,'<x>','exec'), gzip + a85
    lambda s: (f"import gzip, base64\nblob = {base64.a85encode(gzip.compress(s.encode())).decode()!r}\n"
               "code = gzip.decompress(base64.a85decode(blob))\nexec(compile(code, '<x>', 'exec'))"),
    # bz2 + b32 through importlib
    lambda s: ("import importlib\n"
               f"exec(importlib.import_module('bz2').decompress(importlib.import_module('base64').b32decode("
               f"{base64.b32encode(bz2.compress(s.encode())).decode()!r})))"),
    # codecs.decode(..., 'base64') then zlib, with bytes literal and implicit concatenation
    lambda s: (lambda b: f"import codecs, zlib\nexec(zlib.decompress(codecs.decode({b!r}, 'base64')))")(
        base64.b64encode(zlib.compress(s.encode()))),
    # module alias with attribute call, raw deflate with wbits
    lambda s: (lambda c: f"import zlib as Z, base64\nexec(Z.decompress(base64.b64decode({base64.b64encode(c).decode()!r}), -15))")(
        _raw_deflate(s.encode())),
])
def test_wrapper_variants(make):
    res = decode_source(make(ORIGINAL))
    assert res.text == ORIGINAL, res.notes
    assert res.decoded and res.layers


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def test_garbage_payload_leaves_the_stub_and_notes_it():
    stub = "import lzma, base64\nexec(lzma.decompress(base64.b85decode('VPRomVPRomVPRomVPRom')))\n"
    res = decode_source(stub)
    assert res.text == stub and not res.decoded and res.layers == []
    assert len(res.notes) == 1 and "could not be decoded" in res.notes[0]
    bad_b64 = "import zlib, base64\nexec(zlib.decompress(base64.b64decode('!!!not base64!!!')))\n"
    res2 = decode_source(bad_b64)
    assert res2.text == bad_b64 and res2.notes


def test_nothing_is_ever_executed(tmp_path: Path):
    marker = tmp_path / "executed"
    payload = f"open({str(marker)!r}, 'w').write('x')\n"
    res = decode_source(_lzma_b85(payload))
    assert res.text == payload          # decoded, shown, never run
    assert not marker.exists()
    # an exec whose argument calls something outside the whitelist is left alone, never called
    for stub in (f"import os\nexec(os.system('touch {marker}'))\n",
                 f"exec(__import__('os').system('touch {marker}'))\n",
                 f"exec(open({str(marker)!r}, 'w').write('x'))\n",
                 f"import lzma\nexec(lzma.decompress(__import__('subprocess').check_output(['touch', '{marker}'])))\n"):
        out = decode_source(stub)
        assert out.text == stub and not out.decoded
    assert not marker.exists()


def test_decompression_bomb_is_capped(monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_DECODED_BYTES", 10_000)
    stub = _lzma_b85("#" + "x" * 50_000)
    res = decode_source(stub)
    assert res.text == stub and not res.decoded
    assert any("exceeds" in n for n in res.notes)


def test_depth_is_capped(monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_DEPTH", 3)
    text = ORIGINAL
    for _ in range(5):
        text = _lzma_b85(text)
    res = decode_source(text)
    assert len(res.layers) == 6 and res.text != ORIGINAL
    assert any("nested" in n for n in res.notes)


def test_real_scripts_and_odd_input_are_unchanged():
    script = ORIGINAL + "\ndef later():\n    exec(lzma.decompress(b''))\n"
    for text in (ORIGINAL, script, "", "def broken(:\n", "exec('print(1)')\n", "x = 1\nexec(x)\n"):
        res = decode_source(text)
        assert res.text == text and res.layers == [] and not res.decoded
