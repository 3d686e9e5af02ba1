#!/usr/bin/env bash
# `make demo`: install what is missing (venv, test IdP, cached Go-built tools), then run
# hack/demo.py. Arguments go to the demo: --non-interactive, --watch SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
hack/tools.sh > /dev/null
exec .venv/bin/python hack/demo.py "$@"
