# syntax=docker/dockerfile:1
# Multi-stage: the builder installs into a venv and converts the pretrained weights;
# the runtime image carries only the venv, the code and the weights, and runs as non-root.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY evaluation ./evaluation
COPY training ./training
RUN pip install '.[convert]'
# Weights are obtained at build time (download, or the offline conversion), never at run time.
RUN faceid weights

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 faceid \
 && apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACEID_DATA_DIR=/data
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=faceid /app /app
WORKDIR /app
RUN mkdir -p /data && chown faceid /data
USER faceid
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD ["faceid", "serve", "--host", "0.0.0.0", "--port", "8000"]
