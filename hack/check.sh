#!/usr/bin/env bash
# The one check command (`make test`): install what is missing, then lint, type-check and
# run the whole test suite against the real control plane and identity providers.
#   hack/check.sh                 everything
#   hack/check.sh --lint-only     ruff + mypy only
#   hack/check.sh -- -k foo       extra arguments after -- go to pytest
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
say() { printf '[check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$SECONDS
lint_only=0
if [ "${1:-}" = "--lint-only" ]; then lint_only=1; shift; fi
[ "${1:-}" = "--" ] && shift

hack/venv.sh || exit 1
say "ruff"
.venv/bin/ruff check sidecar operator tests hack || exit 1
.venv/bin/ruff format --check sidecar operator tests hack || exit 1
say "mypy (strict)"
.venv/bin/mypy || exit 1
shell_scripts=(hack/*.sh .ci/run)
if [ "$lint_only" = 1 ]; then
  # The Debian packages of hack/tools.sh bring shellcheck; a bare lint run uses it
  # when it is there.
  if command -v shellcheck > /dev/null; then say "shellcheck"; shellcheck "${shell_scripts[@]}" || exit 1; fi
  exit 0
fi

say "test tools (Kubernetes, etcd, helm, Dex, containerd, CoreDNS, Debian packages): cached builds"
hack/tools.sh > /dev/null || exit 1
say "shellcheck"
shellcheck "${shell_scripts[@]}" || exit 1
say "images (pause, sidecar, operator; built here without a registry): cached builds"
hack/images.sh > /dev/null || exit 1

say "pytest"
export CHECKOV="$PWD/.venv/opt/checkov/bin/checkov"
.venv/bin/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then say "pytest collected no tests: that is a failure"; exit 1; fi
say "done in $((SECONDS - start)) s (exit $rc)"
exit "$rc"
