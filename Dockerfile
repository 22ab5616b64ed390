# parafeed: one image for the API server and the workers.
#   CPU (default):  docker build -t parafeed .
#   CUDA:           docker build -t parafeed:cuda \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   run:            docker run -p 127.0.0.1:8000:8000 parafeed            (embedded: server + worker)
#                   (it listens on 0.0.0.0 inside the container: publish it on loopback, or behind a proxy such as
#                   compose.yaml's nginx; set PARAFEED_API_KEYS for anything else)
#                   docker run --no-healthcheck parafeed worker --redis-url redis://redis:6379/0
#                   (a worker serves no /healthz: its liveness is its heartbeat, counted by the API's /readyz)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Fashion-MNIST (for test-set inputs and `parafeed eval`); set to 0 to leave it out.
ARG WITH_DATA=1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PARAFEED_HOST=0.0.0.0 \
    PARAFEED_PORT=8000 \
    PARAFEED_METRICS_HOST=0.0.0.0 \
    PARAFEED_WORKERS_PER_HOST=1
# torch threads: the container's cores (its cgroup quota) over PARAFEED_WORKERS_PER_HOST; set it to the number of
# worker containers sharing a host (compose.yaml does), or PARAFEED_THREADS outright.

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# System packages: python where the base lacks it (CUDA images), the dataset package when asked for.
RUN apt-get update \
    && if ! command -v python3 > /dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-pip python3-venv; fi \
    && if [ "${WITH_DATA}" = "1" ]; then apt-get install -y --no-install-recommends dataset-fashion-mnist; fi \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /srv/parafeed

# Dependencies first (a layer that survives code changes): the exact torch wheel (CPU or CUDA index) without its
# dependencies, then everything else, torch's dependencies included, at the versions the tests ran with
# (requirements.lock, written by deploy/lock.py), resolved against empty package stubs.
COPY pyproject.toml README.md requirements.lock ./
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" --no-deps \
    && mkdir -p app samplers models solvers \
    && touch app/__init__.py samplers/__init__.py models/__init__.py solvers/__init__.py \
    && pip install -c requirements.lock . \
    && pip uninstall -y parafeed

# The code and the shipped checkpoints.
COPY solvers ./solvers
COPY models ./models
COPY samplers ./samplers
COPY app ./app
RUN pip install --no-deps -c requirements.lock . \
    && groupadd --gid 10001 parafeed \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin parafeed

USER 10001:10001
EXPOSE 8000
# The port comes from PARAFEED_PORT, the setting `parafeed serve` reads, so `-e PARAFEED_PORT=9000` moves both.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PARAFEED_PORT', '8000'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["parafeed"]
CMD ["serve"]
