"""The configuration of the local node's components (tests/node.py), as text and data.

One place for the addresses and for what each component is told: containerd's config
(cgroupfs, the locally built pause image, the clamped oom_score_adj this VM needs), the
CNI bridge network, the kubelet's and kube-proxy's configuration files and CoreDNS's
Corefile. Each comment says why a setting differs from the component's default; the
facts behind them are in shared/real-node.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "BRIDGE",
    "CONTAINERD_CONFIG",
    "COREFILE",
    "HOST_IP",
    "KUBELET_CONFIG",
    "KUBE_PROXY_CONFIG",
    "NODE_NAME",
    "POD_CIDR",
    "SERVICE_CIDR",
    "cni_conflist",
]

NODE_NAME = "tr-node"
BRIDGE = "trn0"
# The benchmarking range (RFC 2544), never routed: pods and Services cannot be confused
# with anything real, and nothing addressed to them can leave the machine.
POD_CIDR = "198.18.0.0/24"
HOST_IP = "198.18.0.1"
SERVICE_CIDR = "198.19.0.0/24"


def cni_conflist(*, ipam_dir: Path) -> dict[str, Any]:
    """The CNI network: pods on the bridge, reaching only it and the Service range."""
    return {
        "cniVersion": "1.0.0",
        "name": "token-refresher-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # The bridge exists with the host address already; as a
                # gateway the plugin would switch on ip_forward by itself.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP}]],
                    # Only the Service range goes through the host: no
                    # default route, so pods cannot reach anything else.
                    "routes": [{"dst": SERVICE_CIDR, "gw": HOST_IP}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "loopback"},
        ],
    }


CONTAINERD_CONFIG = """\
# containerd v2 (config schema v3) for the test node; everything lives under {dir}.
version = 3
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    # No registry: the pause image is built from the pause.c Kubernetes ships.
    sandbox = "{pause}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj (the pause container gets
  # -998) makes runc die with "can't get final child's PID from pipe: EOF". Clamp it.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}/net.d"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host without systemd as init: cgroupfs, and opt out of the v1 refusal.
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://{sock}
# Serve on the node address (the bridge) only; health on loopback.
address: {host}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
tlsCertFile: {crt}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [{dns}]
# Pods resolve through cluster DNS only; the host's resolvers are never handed to them.
resolvConf: ""
failSwapOn: false
volumePluginDir: {w}/kubelet-plugins
podLogsDir: {w}/pod-logs
# A small shared disk: do not evict at the default 10-15 % thresholds.
evictionHard:
  memory.available: "200Mi"
  nodefs.available: "2%"
  imagefs.available: "2%"
  nodefs.inodesFree: "2%"
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
# Secret and ConfigMap volumes follow changes within seconds, as the tests expect.
syncFrequency: 10s
"""

KUBE_PROXY_CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kc}
hostnameOverride: {node}
mode: iptables
clusterCIDR: {pods}
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
# NodePorts only on the node address, never on the host's other interfaces.
nodePortAddresses: ["{host}/32"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""

COREFILE = """\
# Cluster DNS for the test node: cluster.local from the API, nothing else (no forward).
cluster.local:53 {{
    bind {host}
    errors
    ready 127.0.0.1:{ready}
    health 127.0.0.1:{health}
    kubernetes cluster.local {{
        kubeconfig {kc}
        pods insecure
    }}
    cache 5
}}
"""
