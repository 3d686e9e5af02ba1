"""The local node itself: Ready with our runtime, pods that run our image, cluster DNS and
Services through kube-proxy, and a pod network that reaches nothing off this machine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.node import HOST_IP, NODE_NAME, SERVICE_CIDR, Node, wait_until

pytestmark = [pytest.mark.node]


def _node_info(node: Node) -> dict[str, Any]:
    info = json.loads(node.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    return dict(info["status"]["nodeInfo"])


def test_the_node_runs_kubelet_and_containerd_of_the_built_versions(node: Node) -> None:
    info = _node_info(node)

    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"] == "containerd://2.4.2"


def _probe_pod(node: Node, namespace: str, script: str) -> str:
    """Run `script` with the sidecar image's python in a pod; return its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
            "containers": [
                {
                    "name": "probe",
                    "image": node.image("sidecar"),
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", script],
                }
            ],
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished() -> str:
        phase = node.kubectl(
            "-n", namespace, "get", "pod", "probe", "-o", "jsonpath={.status.phase}"
        ).stdout
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = wait_until("the probe pod to finish", finished, 90)
    log = node.kubectl("-n", namespace, "logs", "probe").stdout
    assert phase == "Succeeded", log
    return log


_NETWORK_PROBE = """
import json, socket, ssl, urllib.request
out = {}
out["kubernetes"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
with urllib.request.urlopen("https://kubernetes.default.svc/version", context=ctx) as r:
    out["version"] = json.load(r)["gitVersion"]
try:
    socket.gethostbyname("example.com")
    out["outside_name"] = "resolved"
except OSError as exc:
    out["outside_name"] = type(exc).__name__
# /proc/net/route: destination 00000000 is a default route; there must be none.
routes = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
out["default_route"] = any(r[1] == "00000000" for r in routes)
print(json.dumps(out))
"""


def test_a_pod_reaches_the_apiserver_by_service_name_and_nothing_else(
    node: Node, node_namespace: str
) -> None:
    log = _probe_pod(node, node_namespace, _NETWORK_PROBE)
    result = json.loads(log.strip().splitlines()[-1])

    # DNS answered from the cluster domain, kube-proxy routed the ClusterIP to the
    # apiserver, whose certificate names the Service.
    assert result["kubernetes"] == SERVICE_CIDR.replace("0/24", "1")
    assert result["version"] == "v1.36.3"
    # No forwarding resolver, no default route: a pod cannot leave the machine.
    assert result["outside_name"] == "gaierror"
    assert result["default_route"] is False


def test_the_apiserver_and_kubelet_listen_on_the_bridge_address(node: Node) -> None:
    info = json.loads(node.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    addresses = {a["type"]: a["address"] for a in info["status"]["addresses"]}

    assert addresses["InternalIP"] == HOST_IP
    assert node.cp.server.startswith(f"https://{HOST_IP}:")
