"""Profile full training steps of pgolf on the GPU (after the compile warmup) and print the kernels that
take the most time. Env as for pgolf.train; e.g. TRAIN_BATCH_TOKENS=786432 python bench/profile_step.py"""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from pgolf import distributed as D
from pgolf.config import Config
from pgolf.train import Trainer


def main() -> None:
    cfg = Config.from_env().replace(warmup_steps=3, post_train=0)
    tr = Trainer(cfg, D.init())
    tr.setup()
    tr.warmup()
    loader = tr.new_loader()
    step = lambda: (tr.forward_backward(loader, clip=True), tr.optimizer_step(False))  # noqa: E731
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    print(f"step_ms {(time.perf_counter() - t) / 3 * 1000:.1f}")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))


if __name__ == "__main__":
    main()
