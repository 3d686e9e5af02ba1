#!/usr/bin/env bash
# `make demo`: install what is missing (venv, test IdP, cached Go-built tools), then run
# hack/demo.py as the module hack.demo from the repository root, so that it imports the
# tests' node and IdP harness as packages. Arguments go to the demo: --non-interactive,
# --watch SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
hack/tools.sh > /dev/null
exec .venv/bin/python -m hack.demo "$@"
