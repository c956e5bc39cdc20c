"""Hardware calibration: how fast is this node, relative to the record's 8xH100 SXM?

A short `pgolf.train` run (our own code, no submission involved) on the node measures ms per
training step. The record's figure is 87.4 ms/step (pipeline.md section 10: 27,038,812 parameters,
786,432 tokens per step, 8 GPUs). When the calibration config is not the record's, the
expectation is scaled by training compute, 6 x params x tokens per step, and by GPUs:

    expected = 87.4 ms x (params x tokens) / (27,038,812 x 786,432) x (8 / nproc)

That scaling is exact only for compute-bound steps; tiny configs are overhead-bound, so a CPU or
a small config reads as "slow" — which is the honest answer for a node that cannot reproduce
600-second timings. factor = measured / expected; the verdict names the node when factor > 1.10
(rules/runs_judge.py hardware-calibration) and time overruns there become needs_review.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from .sandbox import SandboxConfig, gpu_info, run_sandboxed

RECORD_MS_PER_STEP = 87.4
RECORD_PARAMS = 27_038_812
RECORD_TOKENS_PER_STEP = 786_432
RECORD_GPUS = 8
REPO_ROOT = Path(__file__).resolve().parents[1]

_STEP = re.compile(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms step_avg:([\d.]+)ms")
_PARAMS = re.compile(r"^model_params:(\d+)")

# a calibration config small enough for a CPU, the record's architecture otherwise
CPU_CONFIG = {
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MLP_MULT": "2",
    "BIGRAM_VOCAB_SIZE": "128", "BIGRAM_DIM": "32", "XSA_LAST_N": "2", "ROPE_DIMS": "8", "VE_DIM": "32",
    "VE_LAYERS": "1", "TRAIN_SEQ_LEN": "128", "EVAL_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "2048",
    "VAL_BATCH_SIZE": "4096", "WARMUP_STEPS": "2", "WARMDOWN_ITERS": "3", "TRAIN_LOG_EVERY": "1",
    "VAL_LOSS_EVERY": "0", "MAX_WALLCLOCK_SECONDS": "0", "GPTQ_CALIB_SAMPLES": "2", "COMPILE": "0",
    "SWA_ENABLED": "0", "EVAL_STRIDE": "64",
}


def expected_ms_per_step(params: int, tokens_per_step: int, nproc: int) -> float:
    return (RECORD_MS_PER_STEP * (params * tokens_per_step) / (RECORD_PARAMS * RECORD_TOKENS_PER_STEP)
            * (RECORD_GPUS / max(nproc, 1)))


def parse_calibration_log(lines: list[str], skip: int = 2) -> dict[str, Any]:
    """ms/step from the train lines (the first `skip` steps hold one-off costs), and params."""
    steps: list[tuple[int, float]] = []
    params = None
    for line in lines:
        m = _STEP.match(line.strip())
        if m:
            steps.append((int(m.group(1)), float(m.group(2))))
        m = _PARAMS.match(line.strip())
        if m:
            params = int(m.group(1))
    out: dict[str, Any] = {"params": params, "steps": len(steps)}
    if len(steps) > skip + 1:
        (s0, t0), (s1, t1) = steps[skip], steps[-1]
        out["ms_per_step"] = round((t1 - t0) / (s1 - s0), 3)
    elif steps:
        out["ms_per_step"] = round(steps[-1][1] / max(steps[-1][0], 1), 3)
    return out


def calibrate(data_dir: str | Path | None = None, tokenizer: str | Path | None = None, *, steps: int = 12,
              nproc: int = 1, env: dict[str, str] | None = None, timeout_s: float = 600) -> dict[str, Any]:
    """Run the reference trainer briefly on this node; {} fields explain failures, never raise."""
    data_dir = data_dir or os.environ.get("PGOLF_DATA_DIR")
    tokenizer = tokenizer or os.environ.get("PGOLF_TOKENIZER")
    node = socket.gethostname()
    gpu = gpu_info()
    out: dict[str, Any] = {"node": node, "gpu": gpu.get("name"), "gpus": gpu.get("count", 0),
                           "reference_ms_per_step": RECORD_MS_PER_STEP, "nproc": nproc}
    if not data_dir or not Path(data_dir).is_dir():
        out["error"] = "no data folder for the calibration run"
        return out
    cfg_env = dict(CPU_CONFIG if not gpu else {"WARMUP_STEPS": "3", "VAL_LOSS_EVERY": "0",
                                               "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0"})
    cfg_env.update(env or {})
    cfg_env.update({"ITERATIONS": str(steps), "DATA_PATH": str(Path(data_dir).resolve()),
                    "PYTHONPATH": str(REPO_ROOT), "RUN_ID": "calibration",
                    "CALIBRATION_ONLY": "1"})
    if tokenizer:
        cfg_env["TOKENIZER_PATH"] = str(Path(tokenizer).resolve())
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pgolf-calib-") as td:
        empty = Path(td) / "calib"
        empty.mkdir()
        argv = [sys.executable, "-m", "pgolf.train"] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
             "-m", "pgolf.train"]
        # the post-training pipeline is not what we time: stop once the last step is logged
        rec = run_sandboxed(argv, submission=empty, run_dir=Path(td) / "run", run_env=cfg_env,
                            data_dir=Path(data_dir), cfg=SandboxConfig(timeout_s=timeout_s, term_grace_s=2),
                            tracer=False, sink=lambda stream, line: lines.append(line),
                            should_stop=lambda: any(line.startswith(f"step:{steps}/") for line in lines[-3:]))
    out.update(parse_calibration_log(lines))
    out["status"] = rec.status
    tokens = int(cfg_env.get("TRAIN_BATCH_TOKENS", RECORD_TOKENS_PER_STEP))
    if out.get("ms_per_step") and out.get("params"):
        exp = expected_ms_per_step(out["params"], tokens, nproc)
        out["expected_ms_per_step"] = round(exp, 4)
        out["factor"] = round(out["ms_per_step"] / exp, 3)
    elif rec.status not in ("ok", "stopped"):
        out["error"] = f"calibration run {rec.status}: {rec.message}; " + " | ".join(lines[-3:])[:300]
    return out
