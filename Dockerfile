# syntax=docker/dockerfile:1
# Keelson service image. Stages:
#   builder  uv installs the locked runtime dependencies (their own cached layer), then the project
#            editable, so service/core/migrations.py finds /app/migrations and /app/alembic.ini
#   base     python:3.13-slim with only the virtualenv and the code; UID/GID 10001; no compilers
#   dev      base with the code owned by the service user, for `skaffold dev` file sync only
#   runtime  the last stage, so the default target: what `docker build .` produces
ARG PYTHON_VERSION=3.13
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim AS builder
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode is compiled here because the runtime root filesystem is read-only; the cache mount
# needs copies, not hard links; the image's interpreter is used, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# 1. Dependencies only. This layer is rebuilt when uv.lock or pyproject.toml change, not on code
#    edits. --no-default-groups also leaves out the "checks" group, which --no-dev alone keeps.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-default-groups --no-install-project

# 2. The project: code and migrations, installed into the same virtualenv.
COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-default-groups \
    && python -m compileall -q -j 0 --invalidation-mode checked-hash service migrations

FROM python:${PYTHON_VERSION}-slim AS base
LABEL org.opencontainers.image.title="keelson" \
      org.opencontainers.image.description="Keelson API service (FastAPI + PostgreSQL)" \
      org.opencontainers.image.licenses="MIT"
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 keelson \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin keelson
WORKDIR /app
# Owned by root: the process serving requests cannot rewrite its own code.
COPY --from=builder /app /app
USER 10001:10001
EXPOSE 8000
# For plain `docker run`; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Reported by keelson_build_info{commit}; last, so a new commit rebuilds no earlier layer.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}
# One process; `docker run IMAGE keelson migrate` replaces it for one-off commands.
CMD ["keelson", "serve"]

FROM base AS dev
USER 0:0
RUN chown -R 10001:10001 /app/service
USER 10001:10001

FROM base AS runtime
