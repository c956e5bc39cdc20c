"""Benchmarks and the CPU smoke run of the post-training pipeline.

    python -m pgolf.bench cpu-smoke            # whole pipeline, tiny config, self-made corpus, < 1 min on CPU
    python -m pgolf.bench gptq                 # 66 record-shape matrices: batched GPTQ vs the CPU reference
    python -m pgolf.bench serialize            # artifact bytes/time vs torch.save + LZMA preset 6
    python -m pgolf.bench sliding --data DIR --tokenizer FILE   # record-size model over the val split
    python -m pgolf.bench train-step           # one record micro-batch forward+backward

Each GPU mode prints a small table last. Synthetic weights mimic trained ones (most rows far under the
1/31 scale floor, heavy tails), so compression figures sit in the reference artifact's regime.
"""
from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import torch

RECORD_SHAPES = ([(512, 512)] * 11, [(256, 512)] * 22, [(512, 512)] * 11, [(1536, 512)] * 11, [(512, 1536)] * 11)
RECORD_NAMES = ("attn.c_q", "attn.c_k|c_v", "attn.proj", "mlp.fc", "mlp.proj")


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


# ----------------------------------------------------------------------------------------------------------
# synthetic record-shape layers

def record_layers(seed: int = 0, n_calib: int = 4096) -> tuple[dict, dict]:
    """(unbanked weights, Hessians) for the 66 record matrices (11 layers), trained-like statistics."""
    g = torch.Generator().manual_seed(seed)
    W, H = {}, {}

    def hess(cols):
        mix = torch.randn(cols, cols, generator=g) / cols ** 0.5
        X = torch.randn(n_calib, cols, generator=g) @ mix + 0.3 * torch.randn(n_calib, cols, generator=g)
        h = X.T @ X / n_calib
        h.diagonal().add_(0.01 * h.diagonal().mean())
        return h

    def weight(r, c):
        t = torch.distributions.StudentT(5.0).sample((r, c)) * 0.04
        return t * torch.exp(0.25 * torch.randn(r, 1, generator=g))

    for i in range(11):
        h_in, h_mlp = hess(512), hess(512)
        for name, shape in (("attn.c_q", (512, 512)), ("attn.c_k", (256, 512)), ("attn.c_v", (256, 512))):
            W[f"blocks.{i}.{name}.weight"], H[f"blocks.{i}.{name}.weight"] = weight(*shape), h_in
        W[f"blocks.{i}.attn.proj.weight"], H[f"blocks.{i}.attn.proj.weight"] = weight(512, 512), hess(512)
        W[f"blocks.{i}.mlp.fc.weight"], H[f"blocks.{i}.mlp.fc.weight"] = weight(1536, 512), h_mlp
        W[f"blocks.{i}.mlp.proj.weight"], H[f"blocks.{i}.mlp.proj.weight"] = weight(512, 1536), hess(1536)
    return W, H


def bench_gptq(args) -> dict:
    from pgolf import quant

    torch.manual_seed(0)
    W, H = record_layers()
    names = list(W)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    quant.gptq_quantize_batch([W[names[0]]], [H[names[0]]], device=dev)  # warm-up: CUDA context, cuSOLVER
    _sync()
    t = time.perf_counter()
    got = quant.gptq_quantize_batch([W[n] for n in names], [H[n] for n in names], device=dev)
    _sync()
    t_batch = time.perf_counter() - t
    sample = [n for n in names if n.startswith("blocks.0.") or n.startswith("blocks.5.")]  # 12 matrices
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference runs single-threaded (torchrun sets OMP_NUM_THREADS=1)
    t = time.perf_counter()
    ref = {n: quant.gptq_reference(W[n], H[n]) for n in sample}
    t_ref = (time.perf_counter() - t) * len(names) / len(sample)
    torch.set_num_threads(threads)
    diff = sum(int((got[names.index(n)][0] != ref[n][0]).sum()) for n in sample)
    total = sum(ref[n][0].numel() for n in sample)
    same_scale = sum(torch.equal(got[names.index(n)][1], ref[n][1]) for n in sample)
    rows = [("gptq", "seconds", "note"),
            (f"batched ({dev}), 66 matrices", f"{t_batch:.2f}", "all 5 clip candidates batched"),
            ("reference fp32 CPU, 1 thread (extrapolated)", f"{t_ref:.1f}", f"from {len(sample)} matrices"),
            ("agreement on those", f"{1 - diff / total:.6f}", f"of q values equal; scale choice equal {same_scale}/{len(sample)}")]
    _table(rows)
    return {"quantized": got, "names": names, "W": W}


def bench_serialize(args, gptq_out: dict | None = None) -> None:
    from pgolf import quant, serialize

    if gptq_out is None:
        W, H = record_layers()
        names = list(W)
        res = quant.gptq_quantize_batch([W[n] for n in names], [H[n] for n in names])
    else:
        names, res = gptq_out["names"], gptq_out["quantized"]
    g = torch.Generator().manual_seed(1)
    q, meta = {}, {}
    for n, (qq, s) in zip(names, res):
        q[n + ".q"], q[n + ".scale"], meta[n] = qq, s, {"type": "int6"}
    for n, shape in (("tok_emb.weight", (1024, 512)), ("bigram.embed.weight", (2816, 112)),
                     ("ve_shared.embed.weight", (1024, 128))):
        qq, s = quant.quantize_int8_rows(torch.randn(*shape, generator=g) * 0.02 * torch.exp(torch.randn(shape[0], 1, generator=g)))
        q[n + ".q"], q[n + ".scale"], meta[n] = qq, s, {"type": "int8"}
    for i in range(11):
        for n, shape in (("attn_scale", (512,)), ("mlp_scale", (512,)), ("resid_mix", (2, 512)), ("attn.q_gain", (8,))):
            q[f"blocks.{i}.{n}"], meta[f"blocks.{i}.{n}"] = torch.randn(*shape, generator=g).half(), "passthrough"
    rows = [("serialization", "bytes", "pack s", "unpack s")]
    t = time.perf_counter()
    ref = serialize.reference_lzma_bytes(q, meta)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    import io
    import lzma

    torch.load(io.BytesIO(lzma.decompress(ref)), map_location="cpu")
    rows.append(("reference torch.save + LZMA-6", len(ref), f"{t_ref:.2f}", f"{time.perf_counter() - t:.2f}"))
    for label, codecs in (("pgolf lzma-only", ("lzma",)), ("pgolf zstd-only", ("zstd",)),
                          ("pgolf rANS int8 + zstd rest", ("rans", "zstd")),
                          ("pgolf best-of rANS/zstd/lzma (default)", serialize.CODECS)):
        t = time.perf_counter()
        blob = serialize.pack(q, meta, codecs=codecs)
        t_pack = time.perf_counter() - t
        t = time.perf_counter()
        q2, m2 = serialize.unpack(blob)
        t_un = time.perf_counter() - t
        exact = m2 == meta and all(torch.equal(q[k].view(torch.uint8) if q[k].dtype == torch.int8 else q[k], q2[k].view(torch.uint8) if q2[k].dtype == torch.int8 else q2[k]) for k in q)
        rows.append((label + ("" if exact else " NOT EXACT"), len(blob), f"{t_pack:.2f}", f"{t_un:.2f}"))
    _table(rows)


# ----------------------------------------------------------------------------------------------------------
# sliding eval on a record-size model

def _reference_style_sliding(model, val, luts, windows, seq_len=2048, stride=64, batch=32):
    """The reference's loop (per-window host slicing, full-vocab CE on all positions) on given windows."""
    import torch.nn.functional as F

    dev = next(model.parameters()).device
    total = val.numel() - 1
    fn = model.forward_logits  # eager: this row checks the numbers, the reference's time is known (49.8 s)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    tok = torch.zeros((), dtype=torch.float64, device=dev)
    byt = torch.zeros((), dtype=torch.float64, device=dev)
    with torch.inference_mode():
        for b in range(0, len(windows), batch):
            ws_b = windows[b:b + batch]
            x = torch.zeros(len(ws_b), seq_len, dtype=torch.int64, device=dev)
            y = torch.zeros_like(x)
            wl = []
            for i, ws in enumerate(ws_b):
                end = min(ws + seq_len, total)
                chunk = val[ws:end + 1].to(device=dev, dtype=torch.int64)
                x[i, :end - ws], y[i, :end - ws] = chunk[:-1], chunk[1:]
                wl.append(end - ws)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = fn(x)
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none").view(len(ws_b), -1)
            for i, ws in enumerate(ws_b):
                s = 0 if ws == 0 else max(wl[i] - stride, 0)
                loss += nll[i, s:wl[i]].double().sum()
                tok += wl[i] - s
                t, p = y[i, s:wl[i]], x[i, s:wl[i]]
                byt += (luts.base_bytes[t].double() + (luts.has_leading_space[t] & ~luts.is_boundary[p]).double()).sum()
    vl = (loss / tok).item()
    return vl, vl / math.log(2) * tok.item() / byt.item()


def _record_model():
    from pgolf.config import Config
    from pgolf.model import build_model

    cfg = Config()
    torch.manual_seed(0)
    model = build_model(cfg, "cuda")
    with torch.no_grad():  # the zero-init output projections would make every block the identity
        model.qo_bank[cfg.num_layers:].normal_(0, 0.02)
        model.mlp_down_bank.normal_(0, 0.02)
    return model.eval(), cfg


def bench_sliding(args) -> None:
    from pgolf.attention import configure_sdpa
    from pgolf.bpb import load_luts
    from pgolf.data import load_validation_tokens
    from pgolf.evaluate import model_scorer, sliding_window_eval, window_starts

    configure_sdpa()
    torch.backends.cuda.matmul.allow_tf32 = True
    model, cfg = _record_model()
    val = load_validation_tokens(args.data, 2048)
    luts = load_luts(args.tokenizer, 1024).to("cuda")
    total = val.numel() - 1
    rows = [("sliding eval", "seconds", "val_loss", "val_bpb", "note")]
    scorer = None
    for bs in args.batch:
        scorer = model_scorer(model, compile=True)
        for note in ("incl. compile", "compiled"):
            t = time.perf_counter()
            full = sliding_window_eval(scorer, val, luts, 2048, 64, bs, device="cuda")
            _sync()
            rows.append((f"pgolf batch {bs}, {total} tokens", f"{time.perf_counter() - t:.1f}", f"{full[0]:.8f}",
                         f"{full[1]:.8f}", note))
    sub = window_starts(total, 2048, 64)[: args.check_windows].tolist()
    sums = torch.zeros(3, dtype=torch.float64, device="cuda")
    sliding_window_eval(scorer, val, luts, 2048, 64, args.batch[-1], device="cuda", windows=torch.tensor(sub),
                        sums_out=sums)
    ours = (sums[0] / sums[1]).item()
    rows.append((f"pgolf, first {len(sub)} windows", "", f"{ours:.8f}",
                 f"{ours / math.log(2) * (sums[1] / sums[2]).item():.8f}", "same windows as below"))
    t = time.perf_counter()
    ref = _reference_style_sliding(model, val, luts, sub)
    _sync()
    rows.append((f"reference loop, first {len(sub)} windows", f"{time.perf_counter() - t:.1f}", f"{ref[0]:.8f}",
                 f"{ref[1]:.8f}", "eager, full-vocab CE on all positions"))
    _table(rows)


def bench_train_step(args) -> None:
    from pgolf.attention import configure_sdpa

    configure_sdpa()
    torch.backends.cuda.matmul.allow_tf32 = True
    model, cfg = _record_model()
    model.train()
    fwd = torch.compile(model, dynamic=False, fullgraph=True)
    x = torch.randint(0, 1024, (48, 2048), device="cuda")
    times = []
    for i in range(8):
        _sync()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x, x)
        loss.backward()
        _sync()
        times.append(time.perf_counter() - t)
    _table([("train micro-batch 48x2048 fwd+bwd", "ms"), ("first (compile)", f"{1000 * times[0]:.0f}"),
            ("median of last 5", f"{1000 * sorted(times[3:])[2]:.1f}")])


# ----------------------------------------------------------------------------------------------------------
# CPU smoke: the whole pipeline on a self-made corpus

_WORDS = ("the of and to in is was for on that with as by at from his her an which or were are be this had "
          "not but it one all their they has have two first new when more after its also who into time can "
          "river city music garden winter stone light paper number school water market bridge history").split()


def make_corpus(root: Path, n_docs: int = 700, seed: int = 0) -> tuple[Path, Path]:
    """Deterministic English-ish documents -> a tiny SentencePiece BPE model -> train/val shards."""
    import numpy as np
    import sentencepiece as spm

    from pgolf.data import write_shard

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
            sents.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        docs.append(" ".join(sents) + (f" {rng.randint(0, 9999)}" if rng.random() < 0.3 else ""))
    root.mkdir(parents=True, exist_ok=True)
    text = root / "corpus.txt"
    text.write_text("\n".join(docs), encoding="utf-8")
    prefix = root / "tok"
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=320, model_type="bpe", byte_fallback=True,
        add_dummy_prefix=False, split_digits=True, normalization_rule_name="nmt_nfkc", pad_id=0, bos_id=1,
        eos_id=2, unk_id=3, minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    data = root / "shards"
    data.mkdir(exist_ok=True)
    n_val = 60
    streams = {"val": [], "train": []}
    for k, d in enumerate(docs):
        streams["val" if k < n_val else "train"].extend([1] + sp.encode(d))
    write_shard(data / "fineweb_val_000000.bin", np.array(streams["val"], dtype=np.uint16))
    half = len(streams["train"]) // 2
    write_shard(data / "fineweb_train_000000.bin", np.array(streams["train"][:half], dtype=np.uint16))
    write_shard(data / "fineweb_train_000001.bin", np.array(streams["train"][half:], dtype=np.uint16))
    return data, Path(f"{prefix}.model")


def cpu_smoke(args) -> dict:
    from pgolf.config import Config
    from pgolf.train import run

    torch.set_num_threads(min(4, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        data, tok = make_corpus(Path(tmp) / "corpus")
        # width 384 puts every block matrix above the 65,536-element passthrough threshold, so the run goes
        # through GPTQ (12 matrices) and int8 (tok_emb) exactly like the record
        cfg = Config.tiny(vocab_size=320, num_layers=2, model_dim=384, num_heads=6, num_kv_heads=3, xsa_last_n=2,
                          ve_layers="1", data_path=str(data), tokenizer_path=str(tok), out_dir=tmp, run_id="smoke",
                          iterations=args.steps, warmdown_iters=max(args.steps // 3, 1), val_loss_every=args.steps)
        t = time.perf_counter()
        res = run(cfg)
        vl, vb = res["final_int6_sliding_window"]
        print(f"cpu-smoke: {res['steps']} steps, artifact {res.get('artifact_bytes')} bytes, "
              f"{time.perf_counter() - t:.1f}s")
    print(f"final_int6_sliding_window_exact val_loss:{vl:.8f} val_bpb:{vb:.8f}")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pgolf.bench")
    ap.add_argument("mode", choices=["cpu-smoke", "gptq", "serialize", "gptq+serialize", "sliding", "train-step"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--data", default="/tmp/data")
    ap.add_argument("--tokenizer", default=".data/fineweb_1024_bpe.model")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--check-windows", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.mode == "cpu-smoke":
        cpu_smoke(args)
    elif args.mode == "gptq":
        bench_gptq(args)
    elif args.mode == "serialize":
        bench_serialize(args)
    elif args.mode == "gptq+serialize":
        bench_serialize(args, bench_gptq(args))
    elif args.mode == "sliding":
        bench_sliding(args)
    else:
        bench_train_step(args)


if __name__ == "__main__":
    main()
