#!/usr/bin/env bash
# Start the local services the integration tests use, when they are not running:
# PostgreSQL (127.0.0.1:5432, db "test"), Redis (127.0.0.1:6379), and Debian's Chromium for the
# report's browser test. Each step is best-effort: a test that needs a missing service skips
# with the reason.
set -uo pipefail
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  ver=$(ls /etc/postgresql 2>/dev/null | head -1)
  [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 20); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 20); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "services.sh: could not install chromium; browser tests will skip" >&2
fi
exit 0
