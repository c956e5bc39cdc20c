#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, local services, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
