"""Text -> competition-format shards (pipeline.md §1.1).

`python -m pgolf.tokenize --input TEXT_OR_DIR --out DIR [--model SP.model] [--vocab-size N] [--val-docs N]`

Documents are the input files' paragraphs (blank-line separated) or lines with --per-line. Each is
encoded as BOS + SentencePiece ids (no EOS); the first --val-docs documents form the val split, the
rest train; streams are cut into shards of --shard-tokens tokens named fineweb_{split}_{index:06d}.bin.
Without --model a BPE model is trained like the competition's (byte fallback, no dummy prefix, split
digits, nmt_nfkc) and written to DIR/tokenizer.model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .data import write_shard

BOS_ID = 1


class TokenizeError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def read_documents(src: Path, per_line: bool = False) -> list[str]:
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    if not files:
        raise TokenizeError("no_input", f"no files under {src}")
    docs: list[str] = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        parts = text.splitlines() if per_line else text.split("\n\n")
        docs.extend(p.strip() for p in parts if p.strip())
    if not docs:
        raise TokenizeError("empty_input", f"{src} holds no text")
    return docs


def train_tokenizer(docs: list[str], out_prefix: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(docs), model_prefix=str(out_prefix), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, add_dummy_prefix=False, split_digits=True, normalization_rule_name="nmt_nfkc",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2,
    )
    return out_prefix.with_suffix(".model")


def encode_stream(sp, docs: list[str]) -> np.ndarray:
    ids: list[int] = []
    for d in docs:
        ids.append(BOS_ID)
        ids.extend(sp.encode(d))
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and arr.max() >= 2**16:
        raise TokenizeError("vocab_too_large", "token ids must fit in uint16")
    return arr


def write_split(tokens: np.ndarray, out: Path, split: str, shard_tokens: int) -> list[Path]:
    paths = []
    for k, start in enumerate(range(0, max(tokens.size, 1), shard_tokens)):
        p = out / f"fineweb_{split}_{k:06d}.bin"
        write_shard(p, tokens[start:start + shard_tokens])
        paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgolf.tokenize", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="a text file or a directory of text files")
    ap.add_argument("--out", required=True, help="output directory for the shards")
    ap.add_argument("--model", help="SentencePiece .model to use (trained if omitted)")
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--val-docs", type=int, default=50000, help="first N documents form the val split")
    ap.add_argument("--shard-tokens", type=int, default=10**8)
    ap.add_argument("--per-line", action="store_true", help="one document per line instead of per paragraph")
    args = ap.parse_args(argv)
    try:
        import sentencepiece as spm

        src, out = Path(args.input), Path(args.out)
        if not src.exists():
            raise TokenizeError("no_input", f"{src} does not exist")
        out.mkdir(parents=True, exist_ok=True)
        docs = read_documents(src, args.per_line)
        model = Path(args.model) if args.model else train_tokenizer(docs, out / "tokenizer", args.vocab_size)
        if not model.is_file():
            raise TokenizeError("no_model", f"{model} does not exist")
        sp = spm.SentencePieceProcessor(model_file=str(model))
        n_val = min(args.val_docs, len(docs) - 1) if len(docs) > 1 else 0
        val = write_split(encode_stream(sp, docs[:n_val]), out, "val", args.shard_tokens) if n_val else []
        train = write_split(encode_stream(sp, docs[n_val:]), out, "train", args.shard_tokens)
        print(f"tokenizer:{model} vocab:{sp.vocab_size()} docs:{len(docs)} val_docs:{n_val} "
              f"val_shards:{len(val)} train_shards:{len(train)}")
        return 0
    except (TokenizeError, OSError, RuntimeError) as e:
        msg = str(e) if isinstance(e, TokenizeError) else f"tokenize_failed: {e}"
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
