"""Time `load_submission` (walk, hash, decode sources, parse every log) on each fixture folder.

Usage: .venv/bin/python bench/bench_parse.py [RECORDS_DIR]
Prints per-folder milliseconds and the median; the target is well under 500 ms median.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules.submission import load_submission  # noqa: E402


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "records"
    records = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    folders = sorted(p for p in records.glob("track_*/*") if p.is_dir())
    times = []
    for folder in folders:
        t0 = time.perf_counter()
        sub = load_submission(folder)
        ms = (time.perf_counter() - t0) * 1000
        times.append(ms)
        lines = sum(log.n_lines for log in sub.logs)
        print(f"{ms:8.1f} ms  {len(sub.logs):2d} logs {lines:7d} lines  {folder.name}")
    print(f"folders: {len(times)}  median: {statistics.median(times):.1f} ms  "
          f"p90: {sorted(times)[int(0.9 * (len(times) - 1))]:.1f} ms  max: {max(times):.1f} ms")


if __name__ == "__main__":
    main()
