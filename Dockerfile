# syntax=docker/dockerfile:1
# mlgate server image (docs/deploy.md, "Docker").
#   docker build -t mlgate .
#   docker run -p 8000:8000 -v mlgate-data:/data mlgate
# The base image is a build argument: a digest-pinned python:3.11-slim-bookworm in production.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: wheels for mlgate and everything `mlgate[serve]` needs (what `make serve` installs)
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[serve]"

# ---- runtime: the wheels installed into a slim image, no compiler, no build context
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLGATE_DATA_DIR=/data \
    MLGATE_PORT=8000
# The wheels come from the builder stage (their versions were resolved there), hence no pins here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "mlgate[serve]" \
    && groupadd --system --gid 10001 mlgate \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin mlgate \
    && mkdir -p /data \
    && chown 10001:10001 /data
# State (SQLite registry, local store, model cache, logs, generated secrets) lives on the volume;
# with PostgreSQL + S3 configured only the cache and logs are written there.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# No curl in slim images: Python's urllib. A 503 (starting, draining, degraded) raises, so the check fails.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MLGATE_PORT', '8000'), timeout=2)"]
CMD ["mlgate", "serve", "--host", "0.0.0.0"]
