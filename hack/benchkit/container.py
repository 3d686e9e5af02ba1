"""Section 2, the sidecar in a real container: the memory working set of its cgroup (what
`kubectl top` shows) and its CPU after N refreshes, in a pod on the real local node.

The pod is what the webhook makes of an annotated pod: the operator's own `build_patch`
applied to a pod whose app is the pause image, so the sidecar runs from our image with the
env, volumes (the token on an emptyDir in memory, the secret, the projected report token),
probes, resources and security context injection gives it; failure reporting goes to a
port nothing listens on (nothing fails, nothing is sent). Only the pace is the bench's, the
sidecar section's (`PACE`), so the two sets of figures sit side by side.

The working set is what the kubelet (cAdvisor) reports and evicts on, and what
`kubectl top` shows: the cgroup's memory.usage_in_bytes less its inactive file pages,
which the kernel can drop at any time. Unlike a process's RSS it counts only the file
pages charged to the cgroup (a page goes to the cgroup that read it in first) and, of
those, the ones read again by anyone, plus the kernel's memory for the cgroup. Hence two
pods: the first of the image on the node, and one after it. This host is cgroup v1
(kubelet with cgroupfs): a container's cgroup is kubepods/<qos>/pod<uid>/<container id>
under each controller.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx2
import jsonpatch
from tests.controlplane import tools
from tests.e2e.workloads import RESTRICTED, oauth_secret
from tests.node import DESCRIPTOR, HOST_IP, NODE_NAME, Node
from tests.support import free_port
from tests.support.kube import pod_manifest

from .common import PACE, PACE_TEXT, TOKEN_LIFETIME, Plan, Progress, proc_status, wait_for

if TYPE_CHECKING:
    from token_refresher_operator.manifests import Pod

SECTION = "container"
# Two pods of the sidecar image, started one after the other: the first faults the
# image's files into the page cache and is charged for them (the first pod of an image
# on a node), the second finds them there, charged to the first, as every later pod does.
FIRST, LATER = "sidecar-first", "sidecar-later"
PODS = (FIRST, LATER)
CGROUPS = Path("/sys/fs/cgroup")
MIB = 1024 * 1024


@contextlib.contextmanager
def local_node(say: Progress) -> Iterator[Node]:
    """The node TOKEN_REFRESHER_NODE describes (used, left running), else one of our own,
    started here and stopped on the way out (only one node fits on a machine)."""
    if descriptor := os.environ.get("TOKEN_REFRESHER_NODE"):
        say.say(SECTION, f"using the node already running ({descriptor})")
        yield Node.attach(Path(descriptor), tools())
        return
    from tests.images import images

    if DESCRIPTOR.exists():
        # Fail before building anything: a second node would fail anyway, later.
        pid = json.loads(DESCRIPTOR.read_text()).get("pid")
        if pid and Path(f"/proc/{pid}").exists():
            raise RuntimeError(
                f"a local node is running already (process {pid}) and only one fits on a "
                f"machine: TOKEN_REFRESHER_NODE={DESCRIPTOR} uses it"
            )
    say.say(
        SECTION,
        "starting a local node (about a minute; TOKEN_REFRESHER_NODE=<its node.json> "
        "uses a running one instead)",
    )
    node = Node(tools(build=True), images()).start()
    try:
        yield node
    finally:
        say.say(SECTION, "stopping the local node and restoring the host")
        node.stop()


def bench_container(plan: Plan, work: Path, say: Progress) -> dict[str, Any]:
    from tests.idp import OidcProviderFactory

    work.mkdir(parents=True)
    with local_node(say) as node:
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        say.say(
            SECTION,
            f"an oidc-provider IdP with {TOKEN_LIFETIME}-second tokens on {HOST_IP}; "
            f"namespace {namespace}",
        )
        idps = OidcProviderFactory(work / "idp")
        node.kubectl("create", "namespace", namespace)
        pods: list[Watched] = []
        evicted = 0.0
        sharing: list[str] = []
        try:
            idp = idps.start(ttl=TOKEN_LIFETIME, host=HOST_IP)
            oauth_secret(node, namespace, idp.basic)
            with httpx2.Client(trust_env=False, timeout=5) as http:
                for name in PODS:
                    pod = Watched(node, namespace, name, http)
                    pods.append(pod)
                    if name == FIRST:
                        sharing = containers_of_our_images(node, namespace)
                        evicted = evict_image_files(node)
                        say.say(
                            SECTION,
                            f"{evicted} MiB of the node's image files dropped from the page "
                            f"cache; pod {name}: the first of its image on the node",
                        )
                        if sharing:
                            say.say(
                                SECTION,
                                f"{len(sharing)} other containers of our images run on the "
                                f"node ({', '.join(sharing[:3])}...): the first pod's "
                                "working set depends on what they read (docs/benchmarks.md)",
                            )
                    else:
                        say.say(SECTION, f"pod {name}: the image's files already cached")
                    pod.start(injected_pod(node, namespace, name, idp, work))
                    say.say(SECTION, f"{name}: first token {pod.first_token_after:.1f} s after "
                            f"creation; cgroup {pod.cgroup}")  # fmt: skip
                result = _measure(plan, node, pods, say)
                return result | {
                    "namespace": namespace,
                    "evicted_mib": evicted,
                    # Others on the node reading the images' files make the first pod's
                    # pages of them active (see docs/benchmarks.md): who was there.
                    "other_containers_of_our_images": {
                        "at_start": sharing,
                        "at_end": containers_of_our_images(node, namespace),
                    },
                }
        except (TimeoutError, RuntimeError) as exc:
            tails = "\n".join(pod.log_tail() for pod in pods)
            raise RuntimeError(f"{exc}\n{tails}") from exc
        finally:
            node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            idps.close()


def containers_of_our_images(node: Node, namespace: str) -> list[str]:
    """namespace/pod/container of the node's running containers from the sidecar or the
    operator image (they share the base layers), outside `namespace`."""
    ours = {node.image("sidecar"), node.image("operator")}
    pods = json.loads(node.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    found = []
    for pod in pods:
        meta, spec = pod["metadata"], pod["spec"]
        if meta["namespace"] == namespace or pod.get("status", {}).get("phase") != "Running":
            continue
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if container["image"] in ours:
                found.append(f"{meta['namespace']}/{meta['name']}/{container['name']}")
    return found


def evict_image_files(node: Node) -> float:
    """Drop the node's image layers from the page cache (POSIX_FADV_DONTNEED on every
    file of containerd's overlay snapshots), so the next container of an image faults its
    files in again, as the first on a fresh node does. Pages still mapped by a running
    container stay. Only the node's own files are touched, nothing else on the host.
    Returns the MiB of files advised."""
    snapshots = node.workdir / "containerd" / "root" / "io.containerd.snapshotter.v1.overlayfs"
    total = 0
    for root, _, files in os.walk(snapshots / "snapshots"):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    total += os.fstat(fd).st_size
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return round(total / MIB, 1)


def injected_pod(node: Node, namespace: str, name: str, idp: Any, work: Path) -> dict[str, Any]:
    """An annotated pod (its app the pause image) with the webhook's patch applied, at the
    bench's pace."""
    from token_refresher_operator.annotations import annotation
    from token_refresher_operator.config import ClusterConfig
    from token_refresher_operator.devcert import write_self_signed
    from token_refresher_operator.patch import SIDECAR_NAME, SIDECAR_UID, build_patch

    report_dir = work / f"report-{name}"
    report_dir.mkdir()
    ca = write_self_signed(report_dir)
    config = ClusterConfig.model_validate(
        {
            "sidecar": {"image": node.image("sidecar"), "imagePullPolicy": "Never"},
            "report": {
                "url": f"https://{HOST_IP}:{free_port()}/report",
                "caBundle": ca.cert_file.read_text(),
            },
        }
    )
    # What the sidecar section asks for (a resource: oidc-provider issues JWTs).
    annotations = {
        annotation("inject"): "true",
        annotation("issuer"): idp.issuer,
        annotation("client-id"): idp.basic.client_id,
        annotation("client-secret"): "oauth/secret",
        annotation("scope"): "api:read",
        annotation("resource"): idp.resource,
    }
    spec = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "fsGroup": SIDECAR_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "app",
                "image": node.image("pause"),
                "imagePullPolicy": "Never",
                "securityContext": RESTRICTED,
            }
        ],
    }
    pod = pod_manifest(name, namespace, annotations=annotations, spec=spec)
    ops = build_patch(
        pod=cast("Pod", pod),
        namespace=namespace,
        config=config,
        operator_namespace="token-refresher",
        report_audience="token-refresher-report",
    )
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    # Injected already: without the inject annotation, a webhook a chart installed on the
    # node lets the pod through untouched (and cannot block it while its operator is down).
    del patched["metadata"]["annotations"][annotation("inject")]
    [sidecar] = [c for c in patched["spec"]["initContainers"] if c["name"] == SIDECAR_NAME]
    sidecar["env"] += [
        {"name": f"TOKEN_REFRESHER_{k.upper()}", "value": v} for k, v in PACE.items()
    ]
    return patched


@dataclass(frozen=True)
class CgroupSample:
    """One reading of the container's memory and cpuacct cgroups, and of its processes."""

    at: float  # monotonic
    usage: int  # memory.usage_in_bytes
    max_usage: int  # memory.max_usage_in_bytes
    stat: dict[str, int]  # memory.stat
    cpu_ns: int  # cpuacct.usage
    rss: dict[str, int]  # VmRSS, VmHWM, RssAnon, RssFile of its processes, summed (KiB)
    processes: int

    @property
    def working_set(self) -> int:
        """What cAdvisor calls the working set (and `kubectl top` shows)."""
        return max(0, self.usage - self.stat["total_inactive_file"])


def _sample(relative: Path) -> CgroupSample:
    memory = CGROUPS / "memory" / relative
    stat = {}
    for line in (memory / "memory.stat").read_text().splitlines():
        name, _, value = line.partition(" ")
        stat[name] = int(value)
    pids = [int(p) for p in (memory / "cgroup.procs").read_text().split()]
    rss = dict.fromkeys(("VmRSS", "VmHWM", "RssAnon", "RssFile"), 0)
    for pid in pids:
        with contextlib.suppress(OSError):
            status = proc_status(pid)
            for name in rss:
                rss[name] += status[name]
    return CgroupSample(
        at=time.monotonic(),
        usage=int((memory / "memory.usage_in_bytes").read_text()),
        max_usage=int((memory / "memory.max_usage_in_bytes").read_text()),
        stat=stat,
        cpu_ns=int((CGROUPS / "cpuacct" / relative / "cpuacct.usage").read_text()),
        rss=rss,
        processes=len(pids),
    )


class Watched:
    """One pod with the injected sidecar: started, its cgroup found, its /status read
    from the host at the pod IP (the host is on the pod bridge)."""

    def __init__(self, node: Node, namespace: str, name: str, http: httpx2.Client) -> None:
        self.node, self.namespace, self.name, self.http = node, namespace, name, http
        self.cgroup = Path()
        self.url = ""
        self.polls = 0
        self.first_token_after = 0.0
        self.first: CgroupSample | None = None
        self.last: CgroupSample | None = None
        self.status: dict[str, Any] = {}

    def start(self, manifest: dict[str, Any]) -> None:
        """Create the pod; return at its first token, with the cgroup sampled then."""
        created = time.monotonic()
        self.node.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        ip, uid, cid = wait_for(
            f"the sidecar's container in pod {self.name} to run",
            self._running,
            timeout=120,
            every=0.2,
        )
        self.cgroup = _cgroup_of(uid, cid)
        self.url = f"http://{ip}:8099/status"
        wait_for(f"the first token in pod {self.name}", self.refreshes, timeout=60)
        self.first = _sample(self.cgroup)
        self.first_token_after = self.first.at - created

    def refreshes(self) -> int:
        self.polls += 1
        try:
            self.status = self.http.get(self.url).json()
        except httpx2.TransportError:
            return 0  # not listening yet
        return int(self.status["refresh_count"])

    def _running(self) -> tuple[str, str, str] | None:
        """(pod IP, pod UID, container ID) once the sidecar's container runs."""
        out = self.node.kubectl(
            "-n", self.namespace, "get", "pod", self.name, "-o", "json", check=False
        )
        if out.returncode != 0:
            return None
        pod = json.loads(out.stdout)
        for status in pod.get("status", {}).get("initContainerStatuses") or []:
            if status["name"] == "token-refresher" and "running" in status.get("state", {}):
                ip = pod["status"].get("podIP")
                cid = status.get("containerID", "").partition("://")[2]
                if ip and cid:
                    return ip, pod["metadata"]["uid"], cid
        return None

    def log_tail(self) -> str:
        out = self.node.kubectl(
            "-n", self.namespace, "logs", self.name, "-c", "token-refresher", "--tail=20",
            check=False,
        )  # fmt: skip
        return f"--- the last lines of the sidecar in {self.name}:\n{out.stdout}{out.stderr}"

    def figures(self, kubelet: dict[str, int]) -> dict[str, Any]:
        first, last, status = self.first, self.last, self.status
        assert first is not None
        assert last is not None
        refreshed = max(int(status["refresh_count"]) - 1, 1)  # after the first token
        in_kubelet = kubelet.get(self.name)
        return {
            "cgroup": str(self.cgroup),
            "refreshes": status["refresh_count"],
            "failed_attempts": status["consecutive_failures"],
            "status_polls": self.polls,
            "first_token_after_s": round(self.first_token_after, 2),
            "working_set_mib": round(last.working_set / MIB, 2),
            "working_set_after_first_token_mib": round(first.working_set / MIB, 2),
            "kubelet_working_set_mib": None if in_kubelet is None else round(in_kubelet / MIB, 2),
            "usage_mib": round(last.usage / MIB, 2),
            "max_usage_mib": round(last.max_usage / MIB, 2),
            "anon_mib": round(last.stat["total_rss"] / MIB, 2),
            "cache_mib": round(last.stat["total_cache"] / MIB, 2),
            "active_file_mib": round(last.stat["total_active_file"] / MIB, 2),
            "inactive_file_mib": round(last.stat["total_inactive_file"] / MIB, 2),
            "shmem_mib": round(last.stat.get("total_shmem", 0) / MIB, 2),
            # usage_in_bytes less anon and cache: the kernel's own (v1 charges slab, page
            # tables and stacks to the cgroup).
            "kernel_mib": round(
                (last.usage - last.stat["total_rss"] - last.stat["total_cache"]) / MIB, 2
            ),
            "processes": last.processes,
            "process_rss_mib": round(last.rss["VmRSS"] / 1024, 2),
            "process_hwm_mib": round(last.rss["VmHWM"] / 1024, 2),
            "process_rss_anon_mib": round(last.rss["RssAnon"] / 1024, 2),
            "process_rss_file_mib": round(last.rss["RssFile"] / 1024, 2),
            "cpu_seconds_to_first_token": round(first.cpu_ns / 1e9, 3),
            "cpu_seconds_total": round(last.cpu_ns / 1e9, 3),
            "cpu_ms_per_refresh": round((last.cpu_ns - first.cpu_ns) / 1e6 / refreshed, 2),
            "refresh_window_s": round(last.at - first.at, 1),
        }


def _cgroup_of(uid: str, cid: str) -> Path:
    """The container's cgroup, relative to a controller's root (kubelet's cgroupfs driver)."""
    for qos in ("burstable", "besteffort", ""):
        relative = Path("kubepods") / qos / f"pod{uid}" / cid
        if (CGROUPS / "memory" / relative).is_dir():
            return relative
    raise RuntimeError(
        f"no cgroup for container {cid} of pod {uid} under {CGROUPS / 'memory' / 'kubepods'}"
    )


def _kubelet_working_sets(node: Node, namespace: str) -> dict[str, int]:
    """The kubelet's own figures by pod (/metrics/resource, what metrics-server and
    `kubectl top` read); cached by the kubelet for up to ~15 s: a cross-check."""
    out = node.kubectl(
        "get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/metrics/resource", check=False
    )
    found = {}
    series = re.compile(
        r'container_memory_working_set_bytes\{container="token-refresher",'
        rf'namespace="{namespace}",pod="([^"]+)"\}} (\S+)'
    )
    for line in out.stdout.splitlines():
        if match := series.match(line):
            found[match[1]] = int(float(match[2]))
    return found


def _measure(plan: Plan, node: Node, pods: list[Watched], say: Progress) -> dict[str, Any]:
    say.say(
        SECTION,
        f"{plan.refreshes} refreshes in each pod, side by side ({PACE_TEXT}), about "
        f"{plan.refreshes * 0.5:.0f} s",
    )
    deadline = time.monotonic() + plan.refreshes * 2.0 + 60
    next_note = time.monotonic() + 10
    while any(pod.last is None for pod in pods):
        # Once a second: the polls cost the sidecars CPU too, as the kubelet's probes do.
        time.sleep(1.0)
        counts = []
        for pod in pods:
            if pod.last is None and pod.refreshes() >= plan.refreshes:
                pod.last = _sample(pod.cgroup)
            counts.append(int(pod.status.get("refresh_count", 0)))
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"the sidecars made only {counts} refreshes in time")
        if now >= next_note:
            left = max(plan.refreshes - min(counts), 0) * 0.5
            done = " and ".join(f"{c}/{plan.refreshes}" for c in counts)
            say.say(SECTION, f"{done} refreshes, about {left:.0f} s left")
            next_note = now + 10
    kubelet = _kubelet_working_sets(node, pods[0].namespace)
    by_pod = {pod.name: pod.figures(kubelet) for pod in pods}
    first, later = by_pod[FIRST], by_pod[LATER]
    say.say(
        SECTION,
        f"working set {first['working_set_mib']} MiB in the first pod of the image, "
        f"{later['working_set_mib']} MiB in the next (RSS inside {first['process_rss_mib']} "
        f"MiB); {first['cpu_ms_per_refresh']} ms CPU per refresh",
    )
    return {
        "node": "attached" if os.environ.get("TOKEN_REFRESHER_NODE") else "started here",
        "image": node.image("sidecar"),
        "token_lifetime_s": TOKEN_LIFETIME,
        "pace": PACE_TEXT,
        "reporting": "configured by injection (REPORT_URL, projected token, CA); never called",
        # The figure judged: the larger, which a pod shows when it is the first of its
        # image on the node (or the cache was dropped since).
        "working_set_mib": max(first["working_set_mib"], later["working_set_mib"]),
        "pods": by_pod,
    }
