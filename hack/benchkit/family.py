"""Section 6, the token family (docs/family.md): replicas sharing one refresh token
through a Secret on the real kube-apiserver, at a real oidc-provider that rotates it.

Two figures: kube-apiserver requests per refresh of the family, summed over every
replica of the workload (each sidecar counts its own in
token_refresher_apiserver_requests_total), and the follower access-token age — how long
after a new access token first appears in any replica's token file, a follower's file holds it
too, seen by one thread reading every replica's file every 2 ms.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
from tests.rbac import family_rbac
from tests.support import free_port
from tests.support.kube import create_family_secret

from .cluster import Cluster
from .common import BIN, Plan, Processes, Progress, percentile, sidecar_env, wait_for

FAMILY = "billing-oauth"
LIFETIME = 4  # seconds: the holder refreshes about every 2 s (REFRESH_RATIO 0.5)


class _Files:
    """When each access token first appeared in each replica's token file."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.first_seen: dict[str, dict[str, float]] = {name: {} for name in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Files:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, path in self.paths.items():
                try:
                    token = json.loads(path.read_bytes())["access_token"]
                except (OSError, ValueError, KeyError):
                    continue
                self.first_seen[name].setdefault(token, time.monotonic())
            time.sleep(0.002)


def _requests(port: int) -> float:
    text = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("token_refresher_apiserver_requests_total{"):
            total += float(line.rpartition(" ")[2])
    return total


def _status(port: int) -> dict[str, Any]:
    return dict(httpx2.get(f"http://127.0.0.1:{port}/status", timeout=5, trust_env=False).json())


def _ready(port: int) -> bool:
    try:
        return bool(_status(port)["ready"])
    except httpx2.TransportError:
        return False  # not listening yet


def bench_family(
    plan: Plan, cluster: Cluster, work: Path, procs: Processes, say: Progress
) -> dict[str, Any]:
    from tests.idp import OidcProviderFactory

    section = "family"
    work.mkdir(parents=True)
    cp = cluster.start()
    namespace = "bench-family"
    cp.kubectl("create", "namespace", namespace)
    cp.kubectl("-n", namespace, "create", "serviceaccount", "app")
    role, _ = family_rbac(namespace, "app")
    cp.kubectl("apply", "-f", "-", input=role)
    token_file = work / "sa-token"
    token_file.write_text(
        cp.kubectl("-n", namespace, "create", "token", "app", "--duration=2h").stdout.strip()
    )
    idps = OidcProviderFactory(work / "idp")
    try:
        say.say(section, f"oidc-provider with {LIFETIME}-second tokens, refresh tokens rotating")
        idp = idps.start(ttl=LIFETIME)
        bootstrap = work / "bootstrap"
        bootstrap.write_text(idp.refresh_token())
        create_family_secret(cp, namespace, FAMILY, bootstrap)
        secret = work / "client-secret"
        secret.write_text(idp.basic.client_secret or "")
        ports: dict[str, int] = {}
        outputs: dict[str, Path] = {}
        for i in range(plan.family_replicas):
            name = f"app-{i}"
            ports[name] = free_port()
            outputs[name] = work / name / "token"
            outputs[name].parent.mkdir()
            env = sidecar_env(
                token_url=idp.token_url,
                client_id=idp.basic.client_id,
                client_secret_file=str(secret),
                resource=idp.resource,
                grant="refresh_token",
                refresh_token_file=str(bootstrap),
                refresh_ratio="0.5",
                jitter="0.05",
                family_secret=FAMILY,
                kubernetes_api=cp.server,
                kubernetes_token_file=str(token_file),
                kubernetes_ca_file=str(cp.ca_file),
                pod_namespace=namespace,
                pod_name=name,
                output=str(outputs[name]),
                format="json",
                listen=f"127.0.0.1:{ports[name]}",
                log_level="warning",
            )
            log = (work / f"{name}.log").open("wb")
            procs.start([str(BIN / "token-refresher")], env=env, stdout=log, stderr=log)
        for name, port in ports.items():
            wait_for(f"{name} ready", functools.partial(_ready, port), timeout=30)
        say.say(section, f"{plan.family_replicas} replicas share the family; measuring "
                f"{plan.family_rotations} rotations")  # fmt: skip
        with _Files(outputs) as files:
            before = {name: _requests(port) for name, port in ports.items()}
            start = _status(next(iter(ports.values())))["family"]["rotations"]
            started = time.monotonic()
            wait_for(
                f"{plan.family_rotations} rotations",
                lambda: (
                    _status(next(iter(ports.values())))["family"]["rotations"]
                    >= start + plan.family_rotations
                ),
                timeout=plan.family_rotations * LIFETIME * 2,
            )
            time.sleep(0.5)  # the followers' last adoption
            after = {name: _requests(port) for name, port in ports.items()}
            rotations = _status(next(iter(ports.values())))["family"]["rotations"] - start
            elapsed = time.monotonic() - started
        # A token's age is counted from its first appearance in any replica's file (the
        # holder writes the Secret first, then its own file, so a follower can be first).
        holders = {_status(port)["family"]["holder"] for port in ports.values()}
        ages = []
        tokens = {token for seen in files.first_seen.values() for token in seen}
        for token in tokens:
            seen = {n: at[token] for n, at in files.first_seen.items() if token in at}
            if len(seen) < len(ports):
                continue  # before the window, or not everywhere yet when it closed
            first = min(seen.values())
            ages += [at - first for n, at in seen.items() if n not in holders]
        uses = idp.refresh_token_uses()
    finally:
        idps.close()
    requests = sum(after.values()) - sum(before.values())
    return {
        "replicas": plan.family_replicas,
        "rotations": rotations,
        "seconds": round(elapsed, 1),
        "apiserver_requests": requests,
        "apiserver_requests_per_refresh": round(requests / max(rotations, 1), 2),
        "follower_age_samples": len(ages),
        "follower_age_p50_s": round(percentile(ages, 50), 4) if ages else None,
        "follower_age_p99_s": round(percentile(ages, 99), 4) if ages else None,
        "follower_age_max_s": round(max(ages), 4) if ages else None,
        "refresh_tokens_presented_twice": sum(1 for n in uses.values() if n > 1),
        "holders": sorted(h for h in holders if h),
    }
