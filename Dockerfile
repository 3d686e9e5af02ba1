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

# Every dependency of both images as the exact wheels the lock files name, each checked
# against its hash (hack/lock.py writes the locks from pyproject.toml). Binary wheels only:
# nothing is built from an sdist, whose build could differ from one day to the next. This
# layer changes only with the lock files, not with the code.
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY sidecar/requirements.lock sidecar/
COPY operator/requirements.lock operator/build-requirements.lock operator/
RUN pip download --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: --dest /wheels -r operator/requirements.lock \
 && pip download --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: --dest /build-wheels -r operator/build-requirements.lock

# The project's own wheel, built by the locked build backend (no build isolation, which
# would fetch whatever setuptools is newest).
FROM wheels AS project
RUN python -m venv --without-pip /opt/build \
 && pip --python /opt/build/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --require-hashes -r operator/build-requirements.lock --find-links /build-wheels
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN pip --python /opt/build/bin/python wheel --no-cache-dir --disable-pip-version-check \
        --no-index --no-deps --no-build-isolation --wheel-dir /project .

# Each image's virtualenv: its lock, hash-checked, from the wheels above (--no-index), then
# the project's wheel without dependencies. The sidecar's lock holds the project's own
# dependencies, not the operator extra (kopf, kubernetes, cryptography). The venvs have no
# pip of their own: the builder's pip installs into them.
FROM project AS sidecar-venv
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --require-hashes -r sidecar/requirements.lock \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --no-deps /project/token_refresher-*.whl \
 && python -OO -X no_debug_ranges -m compileall -q -f -j0 /opt/venv/lib

FROM project AS operator-venv
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --require-hashes -r operator/requirements.lock \
 && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --no-deps /project/token_refresher-*.whl

# What both images run on: the interpreter, without the tools that install packages.
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes --no-cache-dir --disable-pip-version-check pip setuptools wheel
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The sidecar runs without docstrings and asserts (-OO: its asserts only narrow types) and
# without the column tables of traceback carets (-X no_debug_ranges): the code of the ~500
# modules it imports is ~2.4 MiB smaller resident (docs/benchmarks.md section 1). Its
# bytecode, the venv's above and the standard library's here, is compiled with the same
# flags at build time: the container writes none (PYTHONDONTWRITEBYTECODE, a read-only
# user), and a module without its .opt-2.pyc would be compiled from source at every
# start, which costs more memory than -OO saves.
FROM runtime AS sidecar-runtime
ENV PYTHONOPTIMIZE=2 \
    PYTHONNODEBUGRANGES=1
RUN python -m compileall -q -f -j0 -x '/(test|tests|idlelib|tkinter|turtledemo)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

FROM sidecar-runtime AS sidecar
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
