#!/usr/bin/env bash
# Device-machine preparation for pgolf GPU runs (source it): the zstandard wheel, then the corpus
# decompressed to /tmp/data so the train paths hash like the reference runs' (/tmp/data/fineweb_train_*.bin).
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/data
python3 - <<'PY'
import glob, os, zstandard
for src in sorted(glob.glob(".data/english_zst/*.zst")):
    dst = os.path.join("/tmp/data", os.path.basename(src)[:-4])
    if not os.path.exists(dst):
        with open(src, "rb") as f, open(dst, "wb") as g:
            zstandard.ZstdDecompressor().copy_stream(f, g)
PY
export DATA_PATH=/tmp/data TOKENIZER_PATH=.data/fineweb_1024_bpe.model PYTHONUNBUFFERED=1
