# One image per service: docker build --build-arg SERVICE=gateway -t genimage-gateway .
# Multi-stage: wheels are built in the first stage; the runtime stage has no compilers and runs as non-root.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ARG SERVICE
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
COPY services/${SERVICE} services/${SERVICE}
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt "./libs/common[db,storage]" "./services/${SERVICE}"

FROM python:${PYTHON}-slim
ARG SERVICE
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 SERVICE=${SERVICE}
RUN useradd --system --uid 10001 --no-create-home genimage
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
USER 10001
# Each service reads <SERVICE>_HOST; listen on all interfaces inside the container.
ENV GATEWAY_HOST=0.0.0.0 BILLING_HOST=0.0.0.0 GENERATION_HOST=0.0.0.0 GALLERY_HOST=0.0.0.0
CMD ["sh", "-c", "exec python -m ${SERVICE}"]
