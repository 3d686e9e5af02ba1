"""A real, local Kubernetes control plane (etcd + kube-apiserver) for tests and the demo.

There is no Docker engine here, so the control plane runs as two local processes built from
Go modules by hack/tools.sh, the way controller-runtime's envtest runs one: the secure port
on 127.0.0.1, RBAC authorization, an admin client certificate in group system:masters, a
service-account issuer with its own signing key, and the default admission plugins (Pod
Security among them). No controller-manager runs, so namespaces never finish terminating,
no `default` ServiceAccount is created and pods stay Pending; that is enough for admission,
TokenRequest/TokenReview and helm. `python -m tests.controlplane` starts one by hand and
prints its kubeconfig.
"""

from __future__ import annotations

import contextlib
import ipaddress
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

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import free_port, http_ok, start_process, stop_process, wait_until
from tests.support.certs import issue, pem_cert, pem_key

# free_port, http_ok, stop_process and wait_until live in tests.support; they stay
# importable from here, where the node, the IdPs and the e2e tests have always found them.
__all__ = [
    "ControlPlane",
    "Tools",
    "free_port",
    "http_ok",
    "stop_process",
    "tools",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tools:
    """Paths of the binaries hack/tools.sh built (cached outside the repo)."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    helm: Path
    dex: Path
    # The node's (tests/node.py).
    kubelet: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kube_proxy: Path
    containerd: Path
    ctr: Path
    containerd_shim_runc_v2: Path
    coredns: Path

    def need(self, *names: str) -> Tools:
        """Fail with a clear message when a binary a test relies on was not built."""
        missing = [n for n in names if not getattr(self, n).exists()]
        if missing:
            raise RuntimeError(
                f"test tools not built: {', '.join(missing)}; run hack/tools.sh (make test "
                "does it): it builds them from Go modules into a cache outside the repo"
            )
        return self


def tools(*, build: bool = False) -> Tools:
    """Locate the tools hack/tools.sh builds; with build=True, build what is missing."""
    cmd = [str(REPO / "hack" / "tools.sh")] + ([] if build else ["--print"])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if build and proc.returncode != 0:
        raise RuntimeError(f"hack/tools.sh failed:\n{proc.stderr[-3000:]}")
    return Tools(**{k.lower(): Path(v) for k, v in paths.items()})


def _say(msg: str) -> None:
    print(f"[controlplane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver with free ports, in a temp dir of its own.

    The apiserver listens on `host` (127.0.0.1 unless a node needs it on its pod bridge);
    `service_cidr` is the Service range, whose first address the `kubernetes` Service
    gets, so it is in the serving certificate too.
    """

    tools: Tools
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tr-cp-")))
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    extra_args: Sequence[str] = ()
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _ca: tuple[x509.Certificate, Any] | None = field(default=None, repr=False)

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def sa_issuer(self) -> str:
        # The issuer is the apiserver itself, so its OIDC discovery document and JWKS are
        # served at <issuer>/.well-known/openid-configuration (Dex reads them).
        return self.server

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def start(self, *, timeout: float = 60.0) -> ControlPlane:
        self.tools.need("etcd", "kube_apiserver", "kubectl")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_pki()
            self._start_etcd(timeout=timeout)
            self._start_apiserver(timeout=timeout)
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(
        self, *, down: float = 0.0, grace: float = 5.0, timeout: float = 60.0
    ) -> None:
        """Stop the kube-apiserver and start it again with the same arguments, port and
        certificates; etcd keeps running, so every object survives. Returns once /readyz
        answers again.

        The stop is the kubelet's: SIGTERM, then SIGKILL after `grace` seconds. (With
        clients watching, such as an operator, the apiserver stops listening at once
        but its process lingers on the open watches for 15 s and more.) `down` is how
        long it stays down before the new process starts.
        """
        old = getattr(self, "_apiserver", None)
        if old is None:
            raise RuntimeError("the kube-apiserver was never started")
        stop_process(old, grace=grace)
        self._procs.remove(old)
        if down:
            time.sleep(down)
        self._start_apiserver(timeout=timeout)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients -------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.tools.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def helm(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.tools.helm), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={
                **os.environ,
                "HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
                "HELM_CONFIG_HOME": str(self.workdir / "helm-config"),
                "HELM_DATA_HOME": str(self.workdir / "helm-data"),
            },
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for the admin user (imported lazily)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    # --- internals -----------------------------------------------------------------------

    def issue(
        self, name: str, *, cn: str, org: str | None = None, server_sans: Sequence[str] = ()
    ) -> tuple[Path, Path]:
        """A certificate signed by the cluster CA, written as <name>.crt/.key in the workdir:
        a client certificate for `cn`/`org`, or a serving one when `server_sans` is given."""
        if self._ca is None:
            raise RuntimeError("the control plane's CA does not exist before start()")
        cert, key = issue(
            cn, ca=self._ca, org=org, server=bool(server_sans), sans=server_sans or ()
        )
        crt_path, key_path = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        crt_path.write_bytes(pem_cert(cert))
        key_path.write_bytes(pem_key(key))
        key_path.chmod(0o600)
        return crt_path, key_path

    def write_kubeconfig(self, name: str, *, cn: str, org: str | None = None) -> Path:
        """A kubeconfig for a client certificate of the user `cn` in group `org`."""
        crt, key = self.issue(name, cn=cn, org=org)
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.server}\n"
            f"    certificate-authority: {self.ca_file}\n"
            f"users:\n- name: {name}\n  user:\n    client-certificate: {crt}\n"
            f"    client-key: {key}\n"
            f"contexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\n"
            "current-context: test\n"
        )
        path.chmod(0o600)
        return path

    @property
    def service_ip(self) -> str:
        """The ClusterIP of the `kubernetes` Service: the first address of the range."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    def _write_pki(self) -> None:
        ca = self._ca = issue("token-refresher-test-ca", ca=None)
        sans = ["localhost", "127.0.0.1", self.host, self.service_ip, "kubernetes"]
        sans += [f"kubernetes.default{d}" for d in ("", ".svc", ".svc.cluster.local")]
        serving = issue("kube-apiserver", ca=ca, server=True, sans=sans)
        admin = issue("admin", ca=ca, org="system:masters")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files = {
            "ca.crt": pem_cert(ca[0]),
            "ca.key": pem_key(ca[1]),
            "apiserver.crt": pem_cert(serving[0]),
            "apiserver.key": pem_key(serving[1]),
            "admin.crt": pem_cert(admin[0]),
            "admin.key": pem_key(admin[1]),
            "sa.key": pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            path = self.workdir / name
            path.write_bytes(data)
            path.chmod(0o600)
        w = self.workdir
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.server}\n"
            f"    certificate-authority: {w / 'ca.crt'}\n"
            f"users:\n- name: admin\n  user:\n    client-certificate: {w / 'admin.crt'}\n"
            f"    client-key: {w / 'admin.key'}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n"
            "current-context: test\n"
        )
        self.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[Any]:
        proc = start_process(argv, self.workdir / f"{name}.log")
        self._procs.append(proc)
        return proc

    def _log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _wait(self, what: str, check: Any, proc: subprocess.Popen[Any], timeout: float) -> None:
        def alive_and_ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what}: the process exited with {proc.returncode}:\n"
                    f"{self._log_tail(Path(str(proc.args[0])).name)}"
                )
            return bool(check())

        wait_until(what, alive_and_ready, timeout, every=0.2, note=_say)

    def _start_etcd(self, *, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn(
            "etcd",
            [
                str(self.tools.etcd),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",  # a throwaway test store: durability buys nothing here
                "--log-level=warn",
            ],
        )
        self._wait(
            "etcd on " + self.etcd_url, lambda: http_ok(self.etcd_url + "/health"), proc, timeout
        )

    def _start_apiserver(self, *, timeout: float) -> None:
        w = self.workdir
        base = [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={w / 'certs'}",
            f"--tls-cert-file={w / 'apiserver.crt'}",
            f"--tls-private-key-file={w / 'apiserver.key'}",
            f"--client-ca-file={w / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.sa_issuer}",
            f"--service-account-key-file={w / 'sa.pub'}",
            f"--service-account-signing-key-file={w / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--enable-admission-plugins=PodSecurity",
            "--allow-privileged=false",
            "--v=0",
        ]
        # extra_args replace the flags they name (list flags would append otherwise).
        named = {a.partition("=")[0] for a in self.extra_args}
        argv = [a for a in base if a.partition("=")[0] not in named] + list(self.extra_args)
        proc = self._apiserver = self._spawn(
            "kube-apiserver", [str(self.tools.kube_apiserver), *argv]
        )
        self._wait(
            f"kube-apiserver on {self.server}",
            lambda: self.kubectl("get", "--raw", "/readyz", check=False, timeout=5).returncode == 0,
            proc,
            timeout,
        )

    def _bootstrap(self) -> None:
        # Anyone may read the service-account issuer's discovery document and keys, as on
        # managed clusters: Dex's oidc connector fetches them without credentials.
        self.kubectl(
            "create",
            "clusterrolebinding",
            "service-account-issuer-discovery-anonymous",
            "--clusterrole=system:service-account-issuer-discovery",
            "--group=system:unauthenticated",
        )


@contextlib.contextmanager
def running(*, build: bool = False) -> Iterator[ControlPlane]:
    with ControlPlane(tools(build=build)) as cp:
        yield cp


if __name__ == "__main__":
    with running(build=True) as cp:
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(cp.kubectl("version").stdout)
        _say("control plane running; Ctrl-C stops it and removes its files")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
