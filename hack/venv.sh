#!/usr/bin/env bash
# Create .venv with the project and its dev tools, and install the npm-based test IdP.
# Re-runs are cheap: pip and npm only act when pyproject.toml or package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[venv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
  say "installing the project and dev tools into .venv (about a minute on a fresh machine)"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  # PYTHONWARNINGS: setuptools warns about editable installs in general, not about us.
  PYTHONWARNINGS=ignore .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
ckstamp=.venv/opt/checkov/.installed-$(sha256sum hack/requirements-checkov.txt | cut -c1-16)
if [ ! -f "$ckstamp" ]; then
  say "installing checkov into a venv of its own (.venv/opt/checkov)"
  python3 -m venv .venv/opt/checkov
  .venv/opt/checkov/bin/pip install -q --disable-pip-version-check -r hack/requirements-checkov.txt
  touch "$ckstamp"
fi
if [ -f hack/idp/package.json ]; then
  lockstamp=hack/idp/node_modules/.installed-$(cat hack/idp/package.json hack/idp/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
  if [ ! -f "$lockstamp" ]; then
    say "installing the test identity provider (oidc-provider from npm)"
    (cd hack/idp && npm ci --no-audit --no-fund --loglevel=error)
    touch "$lockstamp"
  fi
fi
