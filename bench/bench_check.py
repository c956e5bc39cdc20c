"""Wall time of the static audit (`rules.engine.check`) on the 55 merged record folders in ../shared.

Prints, per folder, the median of REPEAT in-process runs, then the median / p90 / max over folders
(target: median < 0.5 s), and the end-to-end time of the `pgolf-audit check --json` console script
(process start included) on a few folders.

    .venv/bin/python bench/bench_check.py [--repeat 5] [--cli 5] [--quiet]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("PGOLF_SHARED", REPO.parent / "shared"))
RECORDS = SHARED / "fixtures" / "records"
TARGET_S = 0.5


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cli", type=int, default=5, help="folders timed through the console script")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    folders = sorted(p for p in RECORDS.glob("track_*/*") if p.is_dir())
    if not folders:
        print(f"no fixtures at {RECORDS}", file=sys.stderr)
        return 1

    from rules.engine import check

    t0 = time.perf_counter()
    check(folders[0])                                # imports and the frontier load, once
    first = time.perf_counter() - t0
    per_folder: list[tuple[float, str, str]] = []
    for f in folders:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            v = check(f)
            times.append(time.perf_counter() - t)
        per_folder.append((statistics.median(times), f.name, v.outcome))
        if not args.quiet:
            print(f"{statistics.median(times) * 1000:8.1f} ms  {v.outcome:12}  {f.parent.name[6:]}/{f.name}")
    meds = [m for m, _, _ in per_folder]
    slowest = max(per_folder)
    print(f"\nin-process check over {len(folders)} folders (median of {args.repeat} runs each; first call incl. imports "
          f"{first * 1000:.0f} ms):")
    print(f"  median {statistics.median(meds) * 1000:.1f} ms   p90 {_pct(meds, 0.9) * 1000:.1f} ms   "
          f"max {slowest[0] * 1000:.1f} ms ({slowest[1]})   target median < {TARGET_S * 1000:.0f} ms: "
          f"{'met' if statistics.median(meds) < TARGET_S else 'NOT met'}")

    exe = REPO / ".venv" / "bin" / "pgolf-audit"
    if args.cli and exe.exists():
        picks = sorted(per_folder, reverse=True)[: args.cli]
        cli_times = []
        for _, name, _ in picks:
            f = next(p for p in folders if p.name == name)
            t = time.perf_counter()
            p = subprocess.run([str(exe), "check", str(f), "--json"], capture_output=True)
            dt = time.perf_counter() - t
            cli_times.append(dt)
            print(f"  cli {dt * 1000:8.1f} ms  exit {p.returncode}  {name}")
        print(f"console script on the {len(picks)} slowest folders: median {statistics.median(cli_times) * 1000:.1f} ms "
              f"(process start included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
