"""A real single-node Kubernetes on this machine: the cluster the product is judged on.

Everything below admission runs for real: etcd and kube-apiserver (`ControlPlane`, here
listening on the pod bridge), kube-controller-manager, kube-scheduler, containerd with
Debian's runc, the kubelet, kube-proxy in iptables mode and CoreDNS, all built by
hack/tools.sh, and images built from our Dockerfile by hack/images.sh (there is no
registry: images are imported into containerd and pods use them as they are).

The network stays on this machine. Pods live on the bridge `trn0` in 198.18.0.0/24 (the
benchmarking range, never routed), with no default route: they reach each other, the
host at 198.18.0.1 (apiserver, IdPs, DNS) and the Service range 198.19.0.0/24, which
kube-proxy translates on the host. Pod -> Service -> pod traffic is forwarded by the
host, so `net.ipv4.ip_forward` is on while the node runs, behind a guard chain that only
forwards bridge to bridge. CoreDNS answers cluster.local and nothing else (it forwards
nothing). On stop, or when start fails, every process is stopped, and mounts, network
namespaces, the bridge, cgroups, iptables rules and sysctls are put back as they were
(`tests/hoststate.py`); `stop()` raises if anything is left.

`hack/node.sh` (`python -m tests.node`) starts one by hand; the `node` fixture in
tests/conftest.py starts one per test session. The module is long because starting,
stopping and restoring the host are one idea that must stay in step; what each component
is told lives in tests/nodeconfig.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.controlplane import ControlPlane, Tools
from tests.controlplane import tools as locate_tools
from tests.hoststate import HostState, mounts_under, unmount_under
from tests.images import Image, images
from tests.nodeconfig import (
    BRIDGE,
    CONTAINERD_CONFIG,
    COREFILE,
    HOST_IP,
    KUBE_PROXY_CONFIG,
    KUBELET_CONFIG,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    cni_conflist,
)
from tests.support import free_port, http_ok, start_process, stop_process, wait_until

__all__ = [
    "BRIDGE",
    "HOST_IP",
    "NODE_NAME",
    "POD_CIDR",
    "SERVICE_CIDR",
    "Node",
    "running",
    "wait_until",
]

GUARD_CHAIN = "TR-NODE-GUARD"
# Where a running node records what it changed, so a run killed halfway is undone by the
# next start (and `python -m tests.node --cleanup`).
STATE_FILE = Path(tempfile.gettempdir()) / "token-refresher-node" / "host-state.json"
LOG_DIR = Path(tempfile.gettempdir()) / "token-refresher-node" / "logs"
# What `python -m tests.node` writes for others to attach to its node
# (TOKEN_REFRESHER_NODE=<this file> makes the test suite use it instead of its own).
DESCRIPTOR = Path(tempfile.gettempdir()) / "token-refresher-node" / "node.json"


def say(msg: str) -> None:
    print(f"[node {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run(*argv: str, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Node:
    """A one-node cluster: `start()`, use `kubectl`/`helm`/`cp`, then `stop()`."""

    tools: Tools
    images: dict[str, Image]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tr-node-")))
    cp: ControlPlane = field(init=False)
    _host: HostState | None = None
    _procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    _ports: dict[str, int] = field(default_factory=dict)
    _argv: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cp = ControlPlane(
            self.tools,
            workdir=self.workdir / "cp",
            host=HOST_IP,
            service_cidr=SERVICE_CIDR,
            extra_args=[
                # Webhooks and APIServices are called at their endpoints' pod IPs, as
                # on clusters whose apiserver does not run kube-proxy.
                "--enable-aggregator-routing=true",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                f"--kubelet-client-certificate={self.workdir / 'cp' / 'admin.crt'}",
                f"--kubelet-client-key={self.workdir / 'cp' / 'admin.key'}",
                f"--kubelet-certificate-authority={self.workdir / 'cp' / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--endpoint-reconciler-type=lease",
            ],
        )

    # --- public ----------------------------------------------------------------------

    @classmethod
    def attach(cls, descriptor: Path, tools: Tools) -> Node:
        """The node another process started (`python -m tests.node`); stop() leaves it."""
        info = json.loads(descriptor.read_text())
        if not Path(f"/proc/{info['pid']}").exists():
            raise RuntimeError(f"the node described by {descriptor} is no longer running")
        found = {
            name: Image(name=name, ref=i["ref"], archive=Path(i["archive"]))
            for name, i in info["images"].items()
        }
        node = cls(tools, found, workdir=Path(info["workdir"]))
        node.cp.port = int(info["port"])
        return node

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "workdir": str(self.workdir),
            "port": self.cp.port,
            "kubeconfig": str(self.kubeconfig),
            "images": {
                n: {"ref": i.ref, "archive": str(i.archive)} for n, i in self.images.items()
            },
        }

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    @property
    def ctr_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cp.helm(*args, **kwargs)

    def image(self, name: str) -> str:
        return self.images[name].ref

    def ctr(self, *args: str, check: bool = True) -> str:
        return _run(
            str(self.tools.ctr),
            "--address",
            str(self.ctr_socket),
            "-n",
            "k8s.io",
            *args,
            check=check,
        )

    def restart_kubelet(self, *, timeout: float = 120.0) -> None:
        """Stop the kubelet (SIGTERM, as a node upgrade does) and start it again with the
        same configuration; return once the node is Ready again. Pods keep running."""
        if "kubelet" not in self._argv:
            raise RuntimeError("this node was attached to, not started here: restart it yourself")
        argv = self._argv["kubelet"]
        self._stop("kubelet")
        self._spawn("kubelet", argv)
        self._wait_ready(timeout)

    def _ctr_ok(self, *args: str) -> bool:
        argv = [str(self.tools.ctr), "--address", str(self.ctr_socket), "-n", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def start(self, *, timeout: float = 120.0) -> Node:
        self.tools.need(
            "etcd",
            "kube_apiserver",
            "kubectl",
            "kubelet",
            "kube_scheduler",
            "kube_controller_manager",
            "kube_proxy",
            "containerd",
            "ctr",
            "containerd_shim_runc_v2",
            "coredns",
        )
        if os.geteuid() != 0:
            raise RuntimeError("the local node needs root (bridge, iptables, mounts, cgroups)")
        cleanup_stale()
        begun = time.monotonic()
        self._host = HostState.capture()
        self._host.owner = os.getpid()
        self._host.save(STATE_FILE)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(LOG_DIR, ignore_errors=True)
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            self._network()
            say(f"control plane on https://{HOST_IP} (etcd, kube-apiserver)")
            self.cp.start(timeout=timeout)
            self._containerd(timeout)
            self._import_images()
            self._node_processes()
            self._wait_ready(timeout)
        except BaseException:
            say("start failed; stopping what was started")
            self._dump_logs()
            self.stop(check=False)
            raise
        DESCRIPTOR.write_text(json.dumps(self.describe()))
        say(f"node {NODE_NAME} Ready in {time.monotonic() - begun:.0f} s")
        return self

    def stop(self, *, check: bool = True) -> None:
        """Stop everything and put the host back; raise if anything is left behind."""
        if self._host is None:
            return
        begun = time.monotonic()
        self._drain()
        for name in (
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
            "coredns",
            "kubelet",
        ):
            self._stop(name)
        self._host.kill_processes_in_new_cgroups()
        self._stop("containerd")
        _kill_shims(self.ctr_socket)
        self.cp.stop()
        unmount_under(str(self.workdir), *self._runtime_dirs())
        self._host.restore()
        _run("ip", "link", "delete", BRIDGE, check=False)
        left = self._host.leftovers(workdir=self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        STATE_FILE.unlink(missing_ok=True)
        DESCRIPTOR.unlink(missing_ok=True)
        self._host = None
        say(f"node stopped and host restored in {time.monotonic() - begun:.0f} s")
        if left and check:
            raise RuntimeError(
                "the node left things behind on this machine:\n  " + "\n  ".join(left)
            )

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(check=exc[0] is None)

    # --- network ----------------------------------------------------------------------

    def _network(self) -> None:
        say(f"pod network: bridge {BRIDGE} {HOST_IP}/24, Services {SERVICE_CIDR}")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Host-originated traffic to a Service address stays on the bridge even before
        # kube-proxy has written its rules (without this route it would take the default).
        _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE)
        # Forwarding is needed for pod -> Service -> pod (DNAT on the host); the guard
        # forwards bridge to bridge only, so nothing a pod sends can leave the machine.
        _run("iptables", "-t", "mangle", "-N", GUARD_CHAIN)
        _run(
            "iptables",
            "-t",
            "mangle",
            "-A",
            GUARD_CHAIN,
            "-i",
            BRIDGE,
            "-o",
            BRIDGE,
            "-j",
            "RETURN",
        )
        _run("iptables", "-t", "mangle", "-A", GUARD_CHAIN, "-j", "DROP")
        _run("iptables", "-t", "mangle", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-token-refresher.conflist").write_text(
            json.dumps(cni_conflist(ipam_dir=cni / "ipam"))
        )

    # --- containerd -------------------------------------------------------------------

    def _containerd(self, timeout: float) -> None:
        d = self.workdir / "containerd"
        d.mkdir(parents=True, exist_ok=True)
        config = d / "config.toml"
        config.write_text(
            CONTAINERD_CONFIG.format(
                dir=d,
                sock=self.ctr_socket,
                pause=self.images["pause"].ref,
                cni=self.workdir / "cni",
            )
        )
        say("containerd")
        env = {**os.environ, "PATH": f"{self.tools.containerd.parent}:{os.environ['PATH']}"}
        # The shim is found through PATH; it lives beside containerd in the tools cache.
        env["PATH"] = f"{self.tools.containerd_shim_runc_v2.parent}:{env['PATH']}"
        proc = self._spawn(
            "containerd", [str(self.tools.containerd), "--config", str(config)], env=env
        )
        wait_until(
            "containerd's socket",
            lambda: _alive(proc, "containerd") and self._ctr_ok("images", "list", "-q"),
            timeout,
        )

    def _import_images(self) -> None:
        for image in self.images.values():
            begun = time.monotonic()
            self.ctr("images", "import", "--local", str(image.archive))
            say(f"imported {image.ref} in {time.monotonic() - begun:.1f} s")

    def _runtime_dirs(self) -> list[str]:
        # The shims' sockets and runc's state ignore containerd's `state` setting.
        return ["/run/containerd", "/var/lib/kubelet"]

    # --- kubelet, scheduler, controller-manager, kube-proxy, CoreDNS ----------------

    def _node_processes(self) -> None:
        cp, w = self.cp, self.workdir
        kubelet_kc = cp.write_kubeconfig(
            "kubelet", cn=f"system:node:{NODE_NAME}", org="system:nodes"
        )
        serving = cp.issue("kubelet-serving", cn=NODE_NAME, server_sans=[HOST_IP, NODE_NAME])
        cm_kc = cp.write_kubeconfig("controller-manager", cn="system:kube-controller-manager")
        sched_kc = cp.write_kubeconfig("scheduler", cn="system:kube-scheduler")
        proxy_kc = cp.write_kubeconfig("kube-proxy", cn="system:kube-proxy")
        cp.kubectl(
            "create",
            "clusterrolebinding",
            "tr-node-proxier",
            "--clusterrole=system:node-proxier",
            "--user=system:kube-proxy",
        )
        for name in (
            "kubelet-healthz",
            "cm",
            "sched",
            "proxy-healthz",
            "proxy-metrics",
            "dns-ready",
            "dns-health",
        ):
            self._ports[name] = free_port()
        p = cp.workdir
        say("kube-controller-manager, kube-scheduler")
        self._spawn(
            "kube-controller-manager",
            [
                str(self.tools.kube_controller_manager),
                f"--kubeconfig={cm_kc}",
                f"--authentication-kubeconfig={cm_kc}",
                f"--authorization-kubeconfig={cm_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports['cm']}",
                "--leader-elect=false",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # A test node: pods of a deleted node or namespace go at once.
                "--terminated-pod-gc-threshold=50",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.tools.kube_scheduler),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports['sched']}",
                "--leader-elect=false",
            ],
        )
        say("kubelet")
        kubelet_config = w / "kubelet.yaml"
        kubelet_config.write_text(
            KUBELET_CONFIG.format(
                sock=self.ctr_socket,
                host=HOST_IP,
                healthz=self._ports["kubelet-healthz"],
                crt=serving[0],
                key=serving[1],
                ca=cp.ca_file,
                dns=HOST_IP,
                w=w,
            )
        )
        (w / "kubelet").mkdir(exist_ok=True)
        self._spawn(
            "kubelet",
            [
                str(self.tools.kubelet),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubelet_kc}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={HOST_IP}",
                f"--root-dir={w / 'kubelet'}",
                "--v=1",
            ],
        )
        say("kube-proxy (iptables, Service range only), CoreDNS (cluster.local only)")
        proxy_config = w / "kube-proxy.yaml"
        proxy_config.write_text(
            KUBE_PROXY_CONFIG.format(
                kc=proxy_kc,
                node=NODE_NAME,
                pods=POD_CIDR,
                host=HOST_IP,
                healthz=self._ports["proxy-healthz"],
                metrics=self._ports["proxy-metrics"],
            )
        )
        self._spawn("kube-proxy", [str(self.tools.kube_proxy), f"--config={proxy_config}", "--v=1"])
        corefile = w / "Corefile"
        corefile.write_text(
            COREFILE.format(
                host=HOST_IP,
                kc=cp.kubeconfig,
                ready=self._ports["dns-ready"],
                health=self._ports["dns-health"],
            )
        )
        self._spawn("coredns", [str(self.tools.coredns), "-conf", str(corefile)])

    def _wait_ready(self, timeout: float) -> None:
        def node_ready() -> bool:
            for name in self._procs:
                _alive(self._procs[name], name)
            out = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            return out.stdout.strip() == "True"

        wait_until(f"node {NODE_NAME} Ready", node_ready, timeout)
        wait_until(
            "CoreDNS ready (cluster.local)",
            lambda: http_ok(f"http://127.0.0.1:{self._ports['dns-ready']}/ready"),
            timeout,
        )
        wait_until(
            "kube-proxy healthy",
            lambda: http_ok(f"http://127.0.0.1:{self._ports['proxy-healthz']}/healthz"),
            timeout,
        )
        wait_until(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "sa", "default", check=False).returncode == 0,
            timeout,
        )

    # --- stopping ---------------------------------------------------------------------

    def _drain(self) -> None:
        """Delete every pod while the kubelet runs, so it tears down volumes, sandboxes
        and their network the normal way; whatever is left is killed afterwards."""
        if "kubelet" not in self._procs or self._procs["kubelet"].poll() is not None:
            return
        # Controllers would recreate the pods being deleted.
        self._stop("kube-controller-manager")
        self._stop("kube-scheduler")
        begun = time.monotonic()
        self.kubectl(
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=1",
            "--wait=false",
            check=False,
            timeout=30,
        )
        with contextlib.suppress(TimeoutError):
            wait_until(
                "the kubelet to stop every pod",
                lambda: self.ctr("tasks", "list", "-q", check=False).strip() == "",
                30,
            )
        say(f"pods stopped in {time.monotonic() - begun:.0f} s")

    def _spawn(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[Any]:
        self._argv[name] = list(argv)
        proc = start_process(argv, LOG_DIR / f"{name}.log", env=env, append=True)
        self._procs[name] = proc
        return proc

    def _stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            stop_process(proc, grace=10)

    def _dump_logs(self) -> None:
        for path in sorted(LOG_DIR.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-15:]
            say(f"--- last lines of {path}:\n" + "\n".join(tail))


def _alive(proc: subprocess.Popen[Any], name: str) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited with {proc.returncode}; see {LOG_DIR / name}.log")
    return True


def _kill_shims(socket: Path) -> None:
    """containerd's shims outlive it by design (they detach); ours name our socket."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if b"containerd-shim" in cmd[0] and str(socket).encode() in cmd:
                os.kill(int(entry.name), signal.SIGKILL)


def cleanup_stale() -> None:
    """Undo a node that was killed before it could stop (its snapshot is still there)."""
    if not STATE_FILE.exists():
        return
    host = HostState.load(STATE_FILE)
    if host.owner and host.owner != os.getpid() and Path(f"/proc/{host.owner}").exists():
        raise RuntimeError(
            f"another local node is running (process {host.owner}); stop it first: only "
            f"one node fits on this machine (it owns the bridge {BRIDGE})"
        )
    say(f"a previous node did not stop cleanly; restoring the host from {STATE_FILE}")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes()
            if b"/tr-node-" in cmd and entry.name != str(os.getpid()):
                os.kill(int(entry.name), signal.SIGKILL)
    host.kill_processes_in_new_cgroups()
    time.sleep(1)
    stale = [m for m in mounts_under("/tmp") if "/tr-node-" in m]
    for m in stale:
        subprocess.run(["umount", "-l", m], capture_output=True, check=False)
    unmount_under("/run/containerd", "/var/lib/kubelet")
    host.restore()
    _run("ip", "link", "delete", BRIDGE, check=False)
    STATE_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def running(*, build: bool = True) -> Iterator[Node]:
    node = Node(locate_tools(build=build), images(build=build))
    node.start()
    try:
        yield node
    finally:
        node.stop()


def main(argv: Sequence[str]) -> int:
    if "--cleanup" in argv:
        cleanup_stale()
        return 0

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    with running() as node:
        print(f"export KUBECONFIG={node.kubeconfig}", flush=True)
        print(f"export TOKEN_REFRESHER_NODE={DESCRIPTOR}  # the tests use this node", flush=True)
        say("node running; Ctrl-C stops it and puts the host back as it was")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
