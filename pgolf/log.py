"""Rank-0 run log in the record's exact line formats (pipeline.md §9), so any submission-log parser
(ours included) reads a pgolf log like the record's.

Lines go to stdout and to logs/<RUN_ID>.txt; the file alone starts with the code, the Python/PyTorch
versions and nvidia-smi output, as the record's does.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch


class RunLog:
    def __init__(self, run_id: str, out_dir: str = ".", enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "logs" / f"{run_id}.txt"
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            print(str(Path("logs") / f"{run_id}.txt"), flush=True)

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.enabled:
            return
        if console:
            print(msg, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(msg + "\n")

    def preamble(self, code_files) -> None:
        """File-only header: every code file, versions, nvidia-smi, between two rules of '='."""
        if not self.enabled:
            return
        parts = [Path(p).read_text(encoding="utf-8") for p in code_files]
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            smi = "nvidia-smi: not available"
        rule = "=" * 100
        self("\n".join(parts), console=False)
        self(rule, console=False)
        self(f"Running Python {sys.version}", console=False)
        self(f"Running PyTorch {torch.__version__}", console=False)
        self(smi, console=False)
        self(rule, console=False)


# ---- the record's line formats --------------------------------------------------------------------
def val_line(step: int, iterations: int, loss: float, bpb: float, train_ms: float) -> str:
    return (f"step:{step}/{iterations} val_loss:{loss:.4f} val_bpb:{bpb:.4f} "
            f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")


def train_line(step: int, iterations: int, loss: float, train_ms: float) -> str:
    return (f"step:{step}/{iterations} train_loss:{loss:.4f} "
            f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")


def eval_line(label: str, loss: float, bpb: float, eval_ms: float, extra: str = "") -> str:
    mid = f" {extra}" if extra else ""
    return f"{label} val_loss:{loss:.4f} val_bpb:{bpb:.4f}{mid} eval_time:{eval_ms:.0f}ms"


def exact_line(label: str, loss: float, bpb: float) -> str:
    return f"{label}_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"
