"""Summarize Inductor-generated kernels from a `TORCH_LOGS=output_code` log: for each kernel whose name starts
with a prefix, print its source nodes and problem sizes (to find which graph op a hot profiler entry is).
Usage: python bench/inductor_kernels.py LOG PREFIX"""
from __future__ import annotations

import re
import sys


def main(path: str, prefix: str) -> None:
    text = open(path, encoding="utf-8", errors="replace").read()
    seen = set()
    for m in re.finditer(r"^(\w+) = async_compile\.triton\('(\w+)'", text, re.M):
        name = m.group(2)
        if not name.startswith(prefix) or name in seen:
            continue
        seen.add(name)
        before = text[max(0, m.start() - 4000): m.start()]
        nodes = re.findall(r"^# Topologically Sorted Source Nodes: (.*)$", before, re.M)
        body = text[m.end(): m.end() + 8000]
        sizes = re.findall(r"^\s+(xnumel|r0_numel|rnumel) = (\d+)", body, re.M)
        print(name, dict(sizes))
        print("   ", (nodes[-1] if nodes else "?")[:1200])

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
