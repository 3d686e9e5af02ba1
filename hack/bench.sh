#!/usr/bin/env bash
# `make bench`: the sidecar's footprint (as a process and in a real pod on the local node),
# the webhook's overhead, the fleet's refresh spread and the report endpoint's throughput,
# measured on this machine in one run. Prints a table
# and writes bench-results.json (--out PATH elsewhere; --quick for a fast smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
hack/tools.sh >/dev/null
exec .venv/bin/python -m hack.bench "$@"
