# syntax=docker/dockerfile:1
# thingspace-operator image: dependencies from uv.lock in their own layer, only the
# virtualenv in the final image, numeric non-root user, exec-form entrypoint.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY operator/ ./operator/
RUN uv sync --locked --no-dev --no-editable \
 && /opt/venv/bin/python -m compileall -q -o 2 /opt/venv/lib

FROM ${PYTHON_IMAGE}
# PYTHONOPTIMIZE=2 drops docstrings (the kubernetes client alone carries ~17 MB of them)
# and uses the -OO bytecode compiled above; nothing in the operator reads __doc__ or
# relies on assert (docs/performance.md).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONOPTIMIZE=2
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["thingspace-operator", "run"]
