"""Does CUDA work inside the sandbox? Runs a one-line torch check under each isolation setting
and environment (diagnostics for a GPU node; prints what differs)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker import sandbox as sb  # noqa: E402

CHECK = ("import os, torch\nprint('cuda', torch.cuda.is_available(), torch.cuda.device_count())\n"
         "try:\n    torch.cuda.init(); print('init ok', torch.cuda.get_device_name(0))\n"
         "except Exception as e:\n    print('init error', repr(e)[:300])\n"
         "print('env', {k: v for k, v in os.environ.items() if 'CUDA' in k or 'NVIDIA' in k or 'LD_' in k})\n"
         "print('dev', sorted(p for p in os.listdir('/dev') if 'nvidia' in p))\n")

print("host env:", {k: v for k, v in os.environ.items() if "CUDA" in k or "NVIDIA" in k or "LD_" in k})
print("probe:", sb.probe_isolation())
with tempfile.TemporaryDirectory() as td:
    sub = Path(td) / "sub"
    sub.mkdir()
    (sub / "c.py").write_text(CHECK)
    best = None
    for isolate in ((True,) if "--isolated-only" in sys.argv else (True, False)):
        for extra in ((),) if "--isolated-only" in sys.argv else ((), tuple(os.environ)):
            cfg = sb.SandboxConfig(timeout_s=120, isolate=isolate, extra_env_allow=extra)
            rec = sb.run_sandboxed([sys.executable, "c.py"], submission=sub, run_dir=Path(td) / "r", cfg=cfg,
                                   tracer=False)
            print(f"--- isolate={isolate} full_env={bool(extra)} status={rec.status} iso={rec.isolation}")
            print("\n".join(rec.tail[-8:]))
            if best is None and any(line.startswith("cuda True") for line in rec.tail):
                best = (isolate, bool(extra))
    if best is not None:
        print("FLAGS", ("" if best[0] else "--no-isolate ") + ("--pass-env" if best[1] else ""))
