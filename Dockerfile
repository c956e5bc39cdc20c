# One image for every service of docker-compose.yml (api, worker, gpu-worker).
# CPU build by default; the GPU worker's image is built with a CUDA wheel index:
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PGOLF_AUDIT_HOME=/var/lib/pgolf-audit \
    PGOLF_AUDIT_BLOB_DIR=/blobs

# util-linux: unshare(1), which the runner uses to give each run its own network namespace
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 audit \
 && mkdir -p /var/lib/pgolf-audit /blobs /data \
 && chown audit:audit /var/lib/pgolf-audit /blobs

WORKDIR /app
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY rules ./rules
COPY pgolf ./pgolf
COPY store ./store
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" .

USER audit
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["pgolf-audit", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-worker"]
