"""The test control plane for the cluster sections: the operator in DEV mode, namespaces
ready for pods, pod manifests, and pods created from a few client threads."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.controlplane import ControlPlane, tools
from tests.support import kube
from tests.support.operator import OperatorProcess, start_operator, stop_operator

from .common import Processes, Progress, cpu_seconds, percentile


class Cluster:
    """The control plane and, when asked, the operator in DEV mode."""

    def __init__(self, work: Path, procs: Processes, say: Progress) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.procs = procs
        self.say = say
        self.cp: ControlPlane | None = None
        self.operator: OperatorProcess | None = None

    def start(self) -> ControlPlane:
        if self.cp is None:
            self.say.say("cluster", "starting etcd + kube-apiserver on 127.0.0.1")
            self.cp = ControlPlane(tools(), workdir=self.work / "cluster").start()
        return self.cp

    def start_operator(self) -> OperatorProcess:
        """The operator in DEV mode (tests.support's launcher), once its webhook is
        registered and its ports listen."""
        cp = self.start()
        self.say.say("cluster", "starting the operator in DEV mode and waiting for its webhook")
        self.operator = start_operator(
            cp,
            self.work / "operator",
            config="defaults:\n  format: raw\n",
            timeout=90,
            env={"TOKEN_REFRESHER_OPERATOR_LOG_LEVEL": "warning"},
        )
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            stop_operator(self.operator)
            self.operator = None

    def control_plane_pids(self) -> dict[str, int]:
        """The pids of this run's kube-apiserver and etcd (another cluster may be running:
        the test suite's), found by their command lines."""
        cp = self.start()
        wanted = {
            "apiserver": (str(cp.tools.kube_apiserver), f"--secure-port={cp.port}"),
            "etcd": (str(cp.tools.etcd), f"--data-dir={cp.workdir / 'etcd'}"),
        }
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            for name, (binary, flag) in wanted.items():
                if argv[0] == binary and flag in argv:
                    found[name] = int(entry.name)
        return found

    def stop(self) -> None:
        self.stop_operator()
        if self.cp is not None:
            self.cp.stop()
            self.cp = None


def make_namespace(cp: ControlPlane, name: str) -> None:
    """A namespace with the ServiceAccount `app` and the Secret `oauth` the pods use."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "oauth", "namespace": name},
        "data": {"secret": base64.b64encode(b"bench-client-secret").decode()},
    }
    cp.kubectl("create", "namespace", name)
    cp.kubectl("-n", name, "create", "serviceaccount", "app")
    cp.kubectl("apply", "-f", "-", input=json.dumps(secret))


def pod_manifest(name: str, namespace: str, *, inject: bool) -> dict[str, Any]:
    """A pod of the ServiceAccount `app`, annotated for injection when `inject`."""
    annotations = (
        {
            "token-refresher.io/inject": "true",
            "token-refresher.io/issuer": "https://idp.example/realms/bench",
            "token-refresher.io/client-id": "bench",
            "token-refresher.io/client-secret": "oauth/secret",
            "token-refresher.io/scope": "api:read",
        }
        if inject
        else {}
    )
    return kube.pod_manifest(
        name,
        namespace,
        annotations=annotations,
        spec={"serviceAccountName": "app", "containers": [kube.APP]},
    )


class PodCreator:
    """Creates pods through the apiserver from a few threads, one API client each."""

    def __init__(self, cp: ControlPlane, threads: int) -> None:
        self.cp = cp
        self.threads = threads
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            from kubernetes import client

            api_client = self.cp.api_client()
            with self._lock:
                self._clients.append(api_client)
            api = self._local.api = client.CoreV1Api(api_client)
        return api

    def _create(self, pod: dict[str, Any]) -> tuple[float, bool]:
        started = time.perf_counter()
        resp = self._api().create_namespaced_pod(
            pod["metadata"]["namespace"], pod, _preload_content=False, _request_timeout=30
        )
        latency = time.perf_counter() - started
        body = json.loads(resp.data)
        injected = any(
            c.get("name") == "token-refresher" for c in body["spec"].get("initContainers") or []
        )
        return latency, injected

    def batch(self, pods: list[dict[str, Any]]) -> tuple[float, list[float], int]:
        """Create `pods`; return the wall time, each creation's latency, how many injected."""
        with ThreadPoolExecutor(self.threads) as pool:
            started = time.perf_counter()
            results = list(pool.map(self._create, pods))
            wall = time.perf_counter() - started
        return wall, [r[0] for r in results], sum(1 for r in results if r[1])

    def close(self) -> None:
        for api_client in self._clients:
            with contextlib.suppress(Exception):
                api_client.close()


@dataclass
class Creation:
    """Pods created with and without injection, interleaved: rates and latencies."""

    walls: dict[str, float]
    latencies: dict[str, list[float]]
    injected: dict[str, int]
    # CPU seconds of each watched process (webhook, apiserver, etcd, the client) while
    # each kind was created.
    cpu_seconds: dict[str, dict[str, float]]

    def rate(self, kind: str) -> float:
        return len(self.latencies[kind]) / self.walls[kind]

    @property
    def ratio(self) -> float:
        return self.rate("injected") / self.rate("plain")

    def latency_ms(self, kind: str, p: float) -> float:
        return percentile(self.latencies[kind], p) * 1000

    def cpu_ms_per_pod(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                name: round(seconds * 1000 / len(self.latencies[kind]), 2)
                for name, seconds in per_process.items()
            }
            for kind, per_process in self.cpu_seconds.items()
        }


class Pods:
    """Pod manifests of both kinds, numbered across the whole run."""

    KINDS = {"plain": ("bench-plain", False), "injected": ("bench-inject", True)}

    def __init__(self) -> None:
        self.serial = 0

    def make(self, kind: str, count: int) -> list[dict[str, Any]]:
        namespace, inject = self.KINDS[kind]
        made = []
        for _ in range(count):
            self.serial += 1
            made.append(pod_manifest(f"{kind}-{self.serial}", namespace, inject=inject))
        return made


def interleaved(
    creator: PodCreator,
    pods: Pods,
    *,
    rounds: int,
    per_round: int,
    processes: dict[str, int],
    note: Callable[[str], None] | None = None,
) -> Creation:
    """Create `rounds` batches of each kind, alternating, and watch `processes`' CPU."""
    watched = {**processes, "client": os.getpid()}
    result = Creation(
        walls=dict.fromkeys(Pods.KINDS, 0.0),
        latencies={kind: [] for kind in Pods.KINDS},
        injected=dict.fromkeys(Pods.KINDS, 0),
        cpu_seconds={kind: dict.fromkeys(watched, 0.0) for kind in Pods.KINDS},
    )
    for round_ in range(rounds):
        # Alternate which kind goes first, so drift (etcd growing) favours neither.
        order = ["plain", "injected"] if round_ % 2 == 0 else ["injected", "plain"]
        for kind in order:
            before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            wall, latencies, injected = creator.batch(pods.make(kind, per_round))
            for name, pid in watched.items():
                result.cpu_seconds[kind][name] += cpu_seconds(pid) - before[name]
            result.walls[kind] += wall
            result.latencies[kind].extend(latencies)
            result.injected[kind] += injected
        if note is not None:
            note(f"round {round_ + 1}/{rounds} done")
    return result
