#!/usr/bin/env bash
# The main job on embedded defaults, from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pgolf-audit demo "$@"
