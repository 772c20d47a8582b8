# syntax=docker/dockerfile:1
# Multi-stage: the builder installs requirements.lock (every dependency, pinned with hashes: the
# install CI tested) and then the wheel (code, shipped model, splits, configs) into a venv, and
# converts the pretrained weights; the runtime image carries only that venv and runs as
# non-root. No source tree is needed at run time: the package finds its own models.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY app ./app
COPY evaluation ./evaluation
COPY training ./training
COPY faceid ./faceid
COPY models ./models
RUN pip install --no-deps --no-build-isolation . && pip check
# Pretrained weights are obtained at build time (download, or the offline conversion), never
# at run time; the shipped fine-tuned model is already inside the installed package.
RUN faceid weights

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 faceid
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    FACEID_DATA_DIR=/data
COPY --from=builder /opt/venv /opt/venv
# Named volumes (gallery, training runs, exported models) inherit these owners.
RUN mkdir -p /data /work/runs /models && chown faceid /data /work /work/runs /models
WORKDIR /work
USER faceid
VOLUME ["/data"]
EXPOSE 8000
# `faceid probe` asks /readyz with FACEID_API_KEY when one is set (curl would get 401 then).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["faceid", "probe"]
CMD ["faceid", "serve", "--host", "0.0.0.0", "--port", "8000"]
