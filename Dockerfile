# syntax=docker/dockerfile:1
# One image per service:  docker build --build-arg SERVICE=gateway -t genimage-gateway .
# (SERVICE = gateway | billing | generation | gallery; docker-compose.yml builds all four.)
#
# Multi-stage: wheels are built in the first stage; the runtime stage has no compilers, no
# source tree and no build tools, and runs as the unprivileged user 10001:10001 (Kubernetes:
# runAsNonRoot, readOnlyRootFilesystem — Python writes no bytecode at run time).
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ARG SERVICE
RUN case "${SERVICE}" in gateway|billing|generation|gallery) ;; \
      *) echo "build with --build-arg SERVICE=gateway|billing|generation|gallery" >&2; exit 1 ;; esac
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
COPY services/${SERVICE} services/${SERVICE}
RUN pip wheel --wheel-dir /wheels -c constraints.txt "./libs/common[db,storage]" "./services/${SERVICE}"

FROM python:${PYTHON}-slim AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="genimage-${SERVICE}" \
      org.opencontainers.image.description="genimage ${SERVICE} service"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 genimage \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin genimage
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
USER 10001:10001
# Each service reads <SERVICE>_HOST; listen on all interfaces inside the container.
# Default ports: gateway 8000 (API), billing 8001, generation 8002, gallery 8003 (health/metrics).
ENV GATEWAY_HOST=0.0.0.0 BILLING_HOST=0.0.0.0 GENERATION_HOST=0.0.0.0 GALLERY_HOST=0.0.0.0
EXPOSE 8000 8001 8002 8003
STOPSIGNAL SIGTERM
# exec: the service is PID 1 and receives SIGTERM itself (uvicorn then drains and stops).
CMD ["sh", "-c", "exec python -m ${SERVICE}"]
