"""Issue 13: replicas that share one bootstrap refresh token.

The regression first: two sidecars started from the same Secret, at an IdP that rotates
refresh tokens and revokes the whole family when a used one comes back (oidc-provider,
`rotateRefreshToken`). Without a family Secret, the second sidecar presents the bootstrap
token the first one already rotated: the IdP sees a replay, revokes the family, and both
sidecars end on invalid_grant. That stays here as the documented behaviour of a refresh
token that is *not* shared (FAMILY_SECRET unset: one pod, or pods with a bootstrap token
each). Its counterpart with FAMILY_SECRET set, against the real kube-apiserver, asserts
that the same start can no longer kill the family — and the rest of the file holds the
holder's death, a rolling replacement, racing replicas with the apiserver cut off
mid-refresh, a missing Role, and a re-seed. The IdP counts every refresh token presented
to it (`refresh_token_uses`): a count of two is a replay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.controlplane import ControlPlane
from tests.faults.harness import ReportReceiver, Sidecar, SidecarFactory, TokenReader, wait_until
from tests.idp import OidcProvider, OidcProviderFactory
from tests.rbac import family_rbac
from tests.support.faultproxy import LoopThread
from tests.support.kube import create_family_secret
from token_refresher_operator.events import render_note

pytestmark = [pytest.mark.idp, pytest.mark.slow]


def refresh_sidecar(
    sidecars: SidecarFactory, idp: OidcProvider, bootstrap: Path, **settings: object
) -> Sidecar:
    return sidecars.for_idp(
        idp,
        grant="refresh_token",
        refresh_token_file=bootstrap,
        refresh_ratio=0.5,
        jitter=0.05,
        **settings,
    )


def test_without_a_family_secret_a_second_replica_replays_the_bootstrap_and_kills_the_family(
    oidc_provider: OidcProviderFactory, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    # Today's behaviour, kept on purpose as the regression: each pod keeps its rotated
    # refresh token in its own emptyDir, so a second pod starts again from the Secret.
    idp = oidc_provider(ttl=4)
    bootstrap = tmp_path / "bootstrap-refresh-token"
    bootstrap.write_text(idp.refresh_token())
    first = refresh_sidecar(sidecars, idp, bootstrap)
    first.wait_status("the first sidecar's token", lambda s: s["ready"])
    second = refresh_sidecar(sidecars, idp, bootstrap)

    second.wait_status(
        "the second sidecar rejected (replayed bootstrap)",
        lambda s: (s["last_error"] or {}).get("error") == "invalid_grant",
    )
    # The replay revoked the family: the first sidecar's own, rotated token is dead too.
    first.wait_status(
        "the first sidecar's next refresh rejected",
        lambda s: (s["last_error"] or {}).get("error") == "invalid_grant",
        timeout=15,
    )
    uses = idp.refresh_token_uses()
    assert max(uses.values()) >= 2, f"no refresh token presented twice: {uses}"
    assert wait_until("the IdP revoking the family", idp.revoked_grants)


# --- with FAMILY_SECRET: the real kube-apiserver coordinates ----------------------------

FAMILY = "billing-oauth"


@dataclass
class Workload:
    """A namespace with the bootstrap Secret (which also holds the family) and the
    service account `app` the sidecars run as; `replica(name)` starts one more."""

    cluster: ControlPlane
    namespace: str
    idp: OidcProvider
    sidecars: SidecarFactory
    workdir: Path
    settings: dict[str, object] = field(default_factory=dict)
    replicas: dict[str, Sidecar] = field(default_factory=dict)

    @property
    def bootstrap(self) -> Path:
        return self.workdir / "bootstrap-refresh-token"

    def sa_token(self) -> Path:
        path = self.workdir / "sa-token"
        if not path.exists():
            token = self.cluster.kubectl(
                "-n", self.namespace, "create", "token", "app", "--duration=2h"
            ).stdout.strip()
            path.write_text(token)
        return path

    def replica(self, name: str, *, start: bool = True, **extra: Any) -> Sidecar:
        sidecar = refresh_sidecar(
            self.sidecars,
            self.idp,
            self.bootstrap,
            family_secret=FAMILY,
            kubernetes_api=self.cluster.server,
            kubernetes_token_file=self.sa_token(),
            kubernetes_ca_file=self.cluster.ca_file,
            pod_namespace=self.namespace,
            pod_name=name,
            start=start,
            **self.settings,
            **extra,
        )
        self.replicas[name] = sidecar
        return sidecar

    def family(self) -> dict[str, Any] | None:
        secret = json.loads(
            self.cluster.kubectl("-n", self.namespace, "get", "secret", FAMILY, "-o", "json").stdout
        )
        raw = secret["data"].get("token-refresher-family")
        return json.loads(base64.b64decode(raw)) if raw else None

    def holder(self) -> str | None:
        family = self.family()
        return family["holder"] if family else None

    def tokens(self) -> dict[str, str]:
        found = {}
        for name, sidecar in self.replicas.items():
            if sidecar.proc is not None and sidecar.proc.poll() is None:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    found[name] = json.loads(sidecar.output.read_text())["access_token"]
        return found

    def assert_no_replay(self) -> None:
        uses = self.idp.refresh_token_uses()
        replayed = {sha: n for sha, n in uses.items() if n > 1}
        assert not replayed, f"the IdP saw refresh tokens more than once: {replayed}"
        assert self.idp.revoked_grants() == [], "the IdP revoked the family"


_namespaces = itertools.count()


@pytest.fixture
def workload(
    cluster: ControlPlane,
    oidc_provider: OidcProviderFactory,
    sidecars: SidecarFactory,
    tmp_path: Path,
) -> Workload:
    namespace = f"family-{os.getpid()}-{next(_namespaces)}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "app")
    idp = oidc_provider(ttl=6)
    work = Workload(cluster, namespace, idp, sidecars, tmp_path)
    work.bootstrap.write_text(idp.refresh_token())
    create_family_secret(cluster, namespace, FAMILY, work.bootstrap)
    return work


def grant_family_rbac(work: Workload) -> None:
    # Exactly the Role docs/family.md gives users: get, watch, patch on that one Secret.
    role, names = family_rbac(work.namespace, "app")
    assert names == [FAMILY]
    work.cluster.kubectl("apply", "-f", "-", input=role)


def ready(sidecar: Sidecar, *, timeout: float = 15) -> dict[str, Any]:
    def serving() -> bool:
        try:
            return sidecar.readyz() in (200, 503)
        except httpx2.TransportError:
            return False

    wait_until(f"{sidecar.base}/readyz", serving)
    return sidecar.wait_status("a token", lambda s: s["ready"], timeout=timeout)


def rotations(work: Workload) -> int:
    family = work.family()
    return int(family["rotations"]) if family else 0


@pytest.mark.cluster
def test_with_a_family_secret_replicas_share_one_family_and_nothing_is_replayed(
    workload: Workload,
) -> None:
    # The regression above, with the feature on: the old failure mode cannot happen.
    grant_family_rbac(workload)
    first = workload.replica("app-a")
    ready(first)
    second = workload.replica("app-b")
    third = workload.replica("app-c")
    for sidecar in (second, third):
        status = ready(sidecar)
        assert status["family"]["role"] == "follower"
        assert status["family"]["holder"] == "app-a"
    start = rotations(workload)
    wait_until("three rotations", lambda: rotations(workload) >= start + 3, timeout=30)
    # Every replica serves the holder's token: the followers never asked the IdP.
    wait_until("the same token everywhere", lambda: len(set(workload.tokens().values())) == 1)
    assert first.status()["family"]["role"] == "holder"
    assert apiserver_requests(second, "watch") > 0  # woken by the holder's writes
    assert apiserver_requests(second, "patch") == 0  # a follower never writes
    metrics = first.metrics()
    assert metrics['token_refresher_family_holder{holder="app-a",holds="1"}'] == 1
    assert metrics["token_refresher_family_last_rotation_timestamp_seconds"] > 0
    workload.assert_no_replay()
    family = workload.family()
    assert family is not None
    for sidecar in (first, second, third):
        assert sidecar.status()["consecutive_failures"] == 0
        # Neither the refresh token nor an access token reaches a log line or /status.
        for secret in (family["refresh_token"], family["access_token"]):
            assert secret not in sidecar.log_text()
            assert secret not in json.dumps(sidecar.status())
        assert "refresh_token" not in json.loads(sidecar.output.read_text())


def apiserver_requests(sidecar: Sidecar, verb: str, code: str = "200") -> float:
    key = f'token_refresher_apiserver_requests_total{{code="{code}",verb="{verb}"}}'
    return sidecar.metrics().get(key, 0.0)


class Pods:
    """Replicas as a Deployment runs them, each with its app reading the token file for
    as long as the pod lives (the app goes when its pod goes)."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.apps: dict[str, TokenReader] = {}
        self.count = 0

    def start(self) -> str:
        name = f"app-{self.count}"
        self.count += 1
        ready(self.workload.replica(name))
        self.apps[name] = TokenReader(self.workload.replicas[name].output).__enter__()
        return name

    def running(self) -> list[str]:
        return [n for n, r in self.workload.replicas.items() if r.proc and r.proc.poll() is None]

    def stop(self, name: str, *, grace: bool = True) -> None:
        self.apps[name].stop()
        if grace:
            self.workload.replicas[name].stop()  # SIGTERM: the holder hands over
        else:
            self.workload.replicas[name].kill()  # kubectl delete pod --grace-period=0

    def close(self) -> None:
        for app in self.apps.values():
            app.stop()

    def assert_always_valid(self) -> None:
        for name, app in self.apps.items():
            assert app.reads > 0, name
            assert app.violations == [], (name, app.violations[:3])


def more_rotations(workload: Workload, n: int) -> None:
    start = rotations(workload)
    wait_until(f"{n} more rotations", lambda: rotations(workload) >= start + n, timeout=10 * n)


@pytest.mark.cluster
def test_replicas_a_rollout_scaling_and_a_killed_holder_keep_one_family(
    workload: Workload,
) -> None:
    # The sequence with sidecar processes: 3 replicas, every one replaced one by
    # one, 5, then 1, then the holder SIGKILLed and replaced. Every app reads a valid
    # token all along; the IdP never sees a refresh token twice.
    grant_family_rbac(workload)
    pods = Pods(workload)
    try:
        for _ in range(3):
            pods.start()
        more_rotations(workload, 2)
        for old in pods.running():  # a rolling replacement: new pod Ready, then old goes
            pods.start()
            pods.stop(old)
        more_rotations(workload, 2)
        for _ in range(2):  # scale to 5
            pods.start()
        more_rotations(workload, 1)
        for name in pods.running()[:-1]:  # and back to 1
            pods.stop(name)
        more_rotations(workload, 2)
        [holder] = pods.running()
        assert workload.holder() == holder
        pods.stop(holder, grace=False)
        replacement = pods.start()  # the Deployment's new pod
        wait_until("the new pod holding the family", lambda: workload.holder() == replacement)
        more_rotations(workload, 2)
    finally:
        pods.close()
    pods.assert_always_valid()
    workload.assert_no_replay()
    assert pods.count == 3 + 3 + 2 + 1


class SlowIdP:
    """A TCP relay to the IdP that holds every answer `delay` seconds: a refresh then
    takes long enough to cut the apiserver off in the middle of it."""

    def __init__(self, loop: LoopThread, port: int, delay: float) -> None:
        self.loop, self.port, self.delay = loop, port, delay
        self._server = loop.run(asyncio.start_server(self._handle, "127.0.0.1", 0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, 0), pump(up_reader, writer, self.delay))


@pytest.mark.cluster
def test_racing_replicas_and_an_apiserver_outage_during_a_refresh_replay_nothing(
    workload: Workload, fault_loop: LoopThread
) -> None:
    grant_family_rbac(workload)
    slow = SlowIdP(fault_loop, workload.idp.port, delay=1.5)
    try:
        replicas = [workload.replica(f"app-{i}", start=False, proxy=slow) for i in range(4)]
        for sidecar in replicas:  # all at once, from the same bootstrap token
            sidecar.start(wait=False)
        for sidecar in replicas:
            ready(sidecar)
        # Cut the apiserver off while the holder waits for the IdP: it gets the rotated
        # refresh token when nobody can store it, and must keep it until it can.
        wait_until("a refresh under way", lambda: (workload.family() or {}).get("presenting"))
        workload.cluster.restart_apiserver(down=3, grace=1)
        start = rotations(workload)
        wait_until(
            "rotations after the outage", lambda: rotations(workload) >= start + 2, timeout=60
        )
    finally:
        slow.stop()
    # The holder's write of the rotated token failed while the apiserver was away...
    assert any(apiserver_requests(s, "patch", "0") > 0 for s in replicas)
    # ...and was made when it came back: nobody presented a token twice.
    workload.assert_no_replay()
    holders = {s.status()["family"]["holder"] for s in replicas}
    assert len(holders) == 1, holders


@pytest.mark.cluster
def test_a_missing_grant_is_a_clear_error_naming_the_permission_and_no_crash_loop(
    workload: Workload, reports: ReportReceiver
) -> None:
    sidecar = workload.replica("app-a", reports=reports)
    status = sidecar.wait_status(
        "a forbidden error", lambda s: (s["last_error"] or {}).get("error") == "forbidden"
    )
    message = status["last_error"]["message"]
    assert f"get secret {workload.namespace}/{FAMILY}" in message
    assert f'verbs get, watch and patch on secrets with resourceNames ["{FAMILY}"]' in message
    assert status["last_error"]["permanent"]
    assert status["waiting"].startswith("waiting")
    report = reports.wait_for("failing", error="forbidden")
    # The pod Event the operator makes of that report names the missing permission.
    note = render_note(
        state="failing",
        error=report["error"],
        description=report["description"],
        consecutive_failures=report["consecutive_failures"],
    )
    assert f"forbidden: missing permission: get secrets/{FAMILY} in {workload.namespace}" in note
    assert sidecar.proc is not None
    assert sidecar.proc.poll() is None  # alive, serving /status: no crash loop
    assert workload.idp.refresh_token_uses() == {}  # nothing reached the IdP
    # Granting it is enough: the retry ladder picks it up.
    grant_family_rbac(workload)
    sidecar.wait_status("a token after the grant", lambda s: s["ready"], timeout=30)
    workload.assert_no_replay()


@pytest.mark.cluster
def test_a_new_bootstrap_token_reseeds_a_dead_family(workload: Workload) -> None:
    grant_family_rbac(workload)
    sidecar = workload.replica("app-a")
    ready(sidecar)
    # The family dies at the IdP (revoked by someone, expired...).
    family = workload.family()
    assert family is not None
    httpx2.post(
        f"{workload.idp.issuer}/token/revocation",
        data={"token": family["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(workload.idp.basic.client_id, workload.idp.basic.client_secret or ""),
        timeout=10,
    ).raise_for_status()
    sidecar.wait_status(
        "the family rejected",
        lambda s: (s["last_error"] or {}).get("error") == "invalid_grant",
        timeout=20,
    )
    assert workload.family()["rejected"] is True
    # A person puts a new refresh token in the Secret; the kubelet updates the file.
    workload.bootstrap.write_text(workload.idp.refresh_token())
    sidecar.wait_status(
        "a token from the new family",
        lambda s: s["ready"] and s["consecutive_failures"] == 0,
        timeout=30,
    )
    assert len(workload.family()["bootstraps"]) == 2


@pytest.mark.cluster
def test_the_documented_role_grants_that_one_secret_and_nothing_else(workload: Workload) -> None:
    grant_family_rbac(workload)
    who = f"--as=system:serviceaccount:{workload.namespace}:app"

    def can(*args: str) -> bool:
        proc = workload.cluster.kubectl(
            "auth", "can-i", *args, "-n", workload.namespace, who, check=False
        )
        return proc.stdout.strip() == "yes"

    for verb in ("get", "watch", "patch"):
        assert can(verb, f"secret/{FAMILY}")
    assert not can("get", "secret/another-secret")
    assert not can("list", "secrets")
    assert not can("create", "secrets")
    assert not can("delete", f"secret/{FAMILY}")
    assert not can("update", f"secret/{FAMILY}")
    assert not can("get", "leases.coordination.k8s.io")
