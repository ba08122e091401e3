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
# Optional extra CA for downloads (a TLS-intercepting proxy), added to the base's bundle:
#   docker buildx build --secret id=extra_ca,src=/path/to/ca.pem .   (podman build: same flag)
# A secret is in no layer nor cache key, the merged bundle is removed after each command,
# and only this stage sees either.
RUN printf '%s\n' '#!/bin/sh' 'set -e' 'if [ -s /run/secrets/extra_ca ]; then' \
      '  trap "rm -f /tmp/ca.pem" EXIT' \
      '  cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem' \
      '  export SSL_CERT_FILE=/tmp/ca.pem PIP_CERT=/tmp/ca.pem UV_SYSTEM_CERTS=1' \
      'fi' '"$@"' > /usr/local/bin/with-extra-ca \
 && chmod 755 /usr/local/bin/with-extra-ca
RUN --mount=type=secret,id=extra_ca,required=false \
    with-extra-ca pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=extra_ca,required=false \
    with-extra-ca uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY operator/ ./operator/
RUN --mount=type=secret,id=extra_ca,required=false \
    with-extra-ca uv sync --locked --no-dev --no-editable \
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
