# syntax=docker/dockerfile:1
# Build: dependencies from the pinned runtime lock into a virtualenv, then the project.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.prod.lock ./
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --no-deps -r requirements.prod.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY simulator ./simulator
RUN /venv/bin/pip install --no-cache-dir --no-deps .

# Run: the virtualenv only, as an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home bib
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/bib-metrics
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/livez\", timeout=2)"]
# python -m app checks the settings, then runs uvicorn with WEB_CONCURRENCY workers and
# --timeout-graceful-shutdown at SHUTDOWN_GRACE + 5 (after the app's own drain).
CMD ["python", "-m", "app"]
