# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target sidecar  -t ghcr.io/token-refresher/token-refresher:0.1.0 .
#   docker build --target operator -t ghcr.io/token-refresher/token-refresher-operator:0.1.0 .
#
# The base is pinned by its full version tag because no registry digest could be looked up
# where this was written. Pin the digest too when you can:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm --format '{{json .Manifest.Digest}}'
# and use python:3.11.14-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Wheels for the project and every dependency of both images, built once.
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels './[operator]'

# Each image's virtualenv, installed from those wheels only (--no-index). The sidecar gets
# the project's wheel and its own dependencies, not the operator extra (kopf, kubernetes,
# cryptography); the operator gets every wheel built above. The venvs have no pip of
# their own: the builder's pip installs into them.
FROM wheels AS sidecar-venv
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels /wheels/token_refresher-*.whl

FROM wheels AS operator-venv
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels /wheels/*.whl

# What both images run on: the interpreter, without the tools that install packages.
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes --no-cache-dir --disable-pip-version-check pip setuptools wheel
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

FROM runtime AS sidecar
COPY --from=sidecar-venv /opt/venv /opt/venv
# Numeric, so the kubelet can enforce runAsNonRoot without resolving a user name.
USER 65532:65532
EXPOSE 8099
ENTRYPOINT ["token-refresher"]

FROM runtime AS operator
COPY --from=operator-venv /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8443 8444 8080
ENTRYPOINT ["token-refresher-operator"]
