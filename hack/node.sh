#!/usr/bin/env bash
# Start the real local node (tests/node.py) by hand and keep it until Ctrl-C: etcd,
# kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy and
# CoreDNS, with the project's images imported. Prints `export KUBECONFIG=...`, and
# `export TOKEN_REFRESHER_NODE=...`, which makes `make test` use this node instead of
# starting its own. Needs root. `hack/node.sh --cleanup` undoes a node that was killed.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
hack/tools.sh > /dev/null
exec .venv/bin/python -m tests.node "$@"
