#!/usr/bin/env bash
# Create .venv and install the project (idempotent: re-installs only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.pgolf-audit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first, pinned to the CPU build that lies on this machine kind's disk
  .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q "torch>=2.9,<=2.14.1"
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
