"""A tiny Parameter-Golf-shaped submission for the runner's tests (CPU, seconds).

It trains a bigram-ish model on the train shards under DATA_PATH, prints the record's log
grammar, writes a compressed artifact, evaluates with sliding windows and chunked test-time
training. MODE (set in the README's run command) selects a behaviour:

  legal           score each chunk under no_grad, then train on it (not the last one)
  train_first     train on each chunk, then score it              (ttt-score-first: fail)
  rescore         legal pass, then a second scoring pass reported  (ttt-score-first: fail)
  val_in_train    trains on validation tokens inside the loop       (validation-in-training: fail)
  socket          tries to reach a host during evaluation            (network-access: fail)
  hang            leaves a child and a SIGTERM-ignoring grandchild, then sleeps
  crash           raises in the middle of training
"""
import glob
import io
import lzma
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

MODE = os.environ.get("MODE", "legal")
SEED = int(os.environ.get("SEED", "1337"))
DATA = os.environ["DATA_PATH"]
STEPS = int(os.environ.get("ITERATIONS", "12"))
SEQ = int(os.environ.get("SEQ_LEN", "32"))
STRIDE = 16
CHUNK = int(os.environ.get("TTT_CHUNK_TOKENS", "256"))
V = 64
RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))


def log(msg):
    if RANK == 0:
        print(msg)


def shard(path):
    header = np.fromfile(path, dtype="<i4", count=256)
    return np.fromfile(path, dtype="<u2", offset=1024, count=int(header[2])).astype(np.int64)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, 32)
        self.head = torch.nn.Linear(32, V)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x)))


def batch(stream, starts):
    x = torch.stack([torch.from_numpy(stream[s:s + SEQ]) for s in starts])
    y = torch.stack([torch.from_numpy(stream[s + 1:s + SEQ + 1]) for s in starts])
    return x, y


def windows(n):
    return [ws for ws in range(0, n - 1, STRIDE) if ws == 0 or min(ws + SEQ, n - 1) - ws >= STRIDE]


def score(model, val, ws_list):
    """Sliding-window NLL sum over the scored tail of each window (ws=0 scores all)."""
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(ws_list), 8):
            group = ws_list[k:k + 8]
            rows_x, rows_y, spans = [], [], []
            for ws in group:
                wlen = min(ws + SEQ, len(val) - 1) - ws
                x = np.zeros(SEQ, dtype=np.int64)
                y = np.zeros(SEQ, dtype=np.int64)
                x[:wlen], y[:wlen] = val[ws:ws + wlen], val[ws + 1:ws + wlen + 1]
                rows_x.append(torch.from_numpy(x))
                rows_y.append(torch.from_numpy(y))
                spans.append((0 if ws == 0 else max(wlen - STRIDE, 0), wlen))
            logits = model(torch.stack(rows_x))
            nll = F.cross_entropy(logits.reshape(-1, V), torch.stack(rows_y).reshape(-1),
                                  reduction="none").reshape(len(group), SEQ)
            for i, (a, b) in enumerate(spans):
                nll_sum += float(nll[i, a:b].sum())
                count += b - a
    return nll_sum, count


def train_on(model, opt, stream, start, end):
    starts = list(range(start, end - SEQ - 1, SEQ))
    for k in range(0, len(starts), 4):
        x, y = batch(stream, starts[k:k + 4])
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    torch.manual_seed(SEED)
    if WORLD > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo")
    train = np.concatenate([shard(p) for p in sorted(glob.glob(os.path.join(DATA, "fineweb_train_*.bin")))])
    val_files = sorted(glob.glob(os.path.join(DATA, "fineweb_val_*.bin")))
    val = np.concatenate([shard(p) for p in val_files])
    log(f"train_loader:dataset:tiny train_shards:1")
    log(f"val_loader:shards pattern={DATA}/fineweb_val_*.bin tokens:{len(val) - 1}")
    log(f"seed:{SEED}")
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    for step in range(1, STEPS + 1):
        if MODE == "val_in_train" and step == STEPS // 2:
            val = np.concatenate([shard(p) for p in val_files])   # re-read inside the loop
        source = val if (MODE == "val_in_train" and step >= STEPS // 2) else train
        x, y = batch(source, rng.integers(0, len(source) - SEQ - 2, size=8).tolist())
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if MODE == "crash" and step == 3:
            raise RuntimeError("tiny submission crashed on purpose")
        ms = (time.perf_counter() - t0) * 1000
        log(f"step:{step}/{STEPS} train_loss:{loss.item():.4f} train_time:{ms:.0f}ms step_avg:{ms / step:.2f}ms")
    if MODE == "hang":
        # a child in our group, and a grandchild that ignores SIGTERM and sleeps (the test finds it
        # by the marker in its command line)
        marker = os.environ.get("HANG_MARKER", "pgolf-hang")
        code = ("import signal,time,subprocess,sys;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
                f"subprocess.Popen([sys.executable,'-c','import signal,time;signal.signal(signal.SIGTERM,"
                f"signal.SIG_IGN);time.sleep(600)','{marker}-grandchild']);time.sleep(600)")
        subprocess.Popen([sys.executable, "-c", code, f"{marker}-child"])
        time.sleep(600)
    ms = (time.perf_counter() - t0) * 1000
    tl, tc = score(model, val, windows(len(val)))
    log(f"step:{STEPS}/{STEPS} val_loss:{tl / tc:.4f} val_bpb:{tl / tc / math.log(2) / 1.5:.4f} "
        f"train_time:{ms:.0f}ms step_avg:{ms / STEPS:.2f}ms")
    if WORLD > 1:
        import torch.distributed as dist
        dist.barrier()     # like a record's all-reduce after its final evaluation
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    blob = lzma.compress(buf.getvalue())
    with open("final_model.int8.ptz", "wb") as f:
        f.write(blob)
    code_bytes = os.path.getsize(__file__)
    log(f"Serialized model int8+lzma: {len(blob)} bytes")
    log(f"Code size: {code_bytes} bytes")
    log(f"Total submission size int8+lzma: {len(blob) + code_bytes} bytes")

    # ---- evaluation with chunked test-time training
    t_eval = time.perf_counter()
    if MODE == "socket":
        try:
            socket.create_connection(("example.com", 443), timeout=2)
        except OSError as e:
            log(f"download failed: {e}")
    ttt_opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = len(val) - 1
    num_chunks = math.ceil(n / CHUNK)
    ws_all = windows(len(val))
    chunk_of = {ws: min((ws + (0 if ws == 0 else STRIDE)) // CHUNK, num_chunks - 1) for ws in ws_all}
    loss_sum, count = 0.0, 0
    log(f"ttt_sliding:start chunks={num_chunks} chunk_tokens={CHUNK} total_windows={len(ws_all)} stride={STRIDE}")
    for c in range(num_chunks):
        mine = [ws for ws in ws_all if chunk_of[ws] == c]
        mine = mine[RANK::WORLD]
        start, end = c * CHUNK, min((c + 1) * CHUNK, n)
        last = c == num_chunks - 1
        if MODE == "train_first" and not last:
            train_on(model, ttt_opt, val, start, end + 1)
        s, k = score(model, val, mine)
        loss_sum, count = loss_sum + s, count + k
        if MODE != "train_first" and not last:
            if WORLD > 1:
                import torch.distributed as dist
                dist.barrier()
            train_on(model, ttt_opt, val, start, end + 1)
    if WORLD > 1:
        import torch.distributed as dist
        t = torch.tensor([loss_sum, float(count)], dtype=torch.float64)
        dist.all_reduce(t)
        loss_sum, count = float(t[0]), int(t[1])
    if MODE == "rescore":
        loss_sum, count = score(model, val, ws_all)   # second pass after adaptation, reported
    vl = loss_sum / max(count, 1)
    log(f"legal_ttt val_loss:{vl:.4f} val_bpb:{vl / math.log(2) / 1.5:.4f} "
        f"eval_time:{(time.perf_counter() - t_eval) * 1000:.0f}ms")
    log(f"legal_ttt_exact val_loss:{vl:.8f} val_bpb:{vl / math.log(2) / 1.5:.8f}")
    if WORLD > 1:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
