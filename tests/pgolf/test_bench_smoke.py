"""The CPU smoke run: corpus -> train -> EMA -> GPTQ -> artifact -> round trip -> sliding window."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FINAL = re.compile(r"^final_int6_sliding_window_exact val_loss:(\d+\.\d{8}) val_bpb:(\d+\.\d{8})$")


def test_cpu_smoke_runs_the_whole_pipeline():
    proc = subprocess.run([sys.executable, "-m", "pgolf.bench", "cpu-smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    m = FINAL.match(lines[-1])
    assert m, lines[-3:]
    loss, bpb = float(m.group(1)), float(m.group(2))
    assert math.isfinite(loss) and 0 < loss < math.log(320) + 1  # better than (or near) uniform over the vocab
    assert bpb > 0
    assert any(re.fullmatch(r"gptq_quantize: 12 GPTQ layers, 0 naive layers", ln) for ln in lines)
    assert any(ln.startswith("final_int6_roundtrip_exact ") for ln in lines)
    size = [ln for ln in lines if ln.startswith("Serialized model int6+lzma: ")]
    assert size and int(size[0].split()[-2]) > 0
