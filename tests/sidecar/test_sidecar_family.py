"""A refresh-token family shared through one Secret: the pure protocol (`family.plan`),
and pods (`FamilyMember`) against an in-memory Secret store that enforces
resourceVersion preconditions like the apiserver, and an IdP that rotates refresh
tokens and revokes the family on a replay. The real kube-apiserver and oidc-provider
run the same scenarios in tests/faults/test_faults_family.py.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.support import wait_until_async
from token_refresher import Settings
from token_refresher.clock import SystemClock
from token_refresher.errors import CoordinationError, TokenEndpointError
from token_refresher.family import (
    FamilyRecord,
    Observation,
    claim_seconds,
    decode,
    encode,
    fingerprint,
    plan,
)
from token_refresher.holder import FamilyMember
from token_refresher.kube import KubeClient
from token_refresher.tokens import Token

NS, NAME = "shop", "billing-oauth"
NOW = 1_800_000_000.0


# --- the pure protocol ---------------------------------------------------------------


def seen(record: FamilyRecord | None, at: float = 100.0) -> Observation:
    return Observation(record, "7", at)


def decide(record: FamilyRecord | None, **kwargs: Any) -> str:
    args: dict[str, Any] = {
        "me": "pod-a",
        "bootstrap": "rt-0",
        "have_expiry": None,
        "now_mono": 101.0,
        "now_wall": NOW,
    }
    args.update(kwargs)
    at = args.pop("seen_at", 100.0)
    return plan(seen(record, at), **args).action


def family(**changes: Any) -> FamilyRecord:
    base = FamilyRecord(
        refresh_token="rt-1",
        access_token="at-1",
        received_at=NOW - 10,
        lifetime=60,
        holder="pod-b",
        claim_seconds=30,
        bootstraps=(fingerprint("rt-0"),),
        rotations=1,
    )
    return FamilyRecord(**{**base.__dict__, **changes})


def test_a_pod_seeds_the_family_when_there_is_none() -> None:
    assert decide(None) == "seed"
    assert decide(None, bootstrap=None) == "rejected"


def test_a_new_pod_adopts_the_family_access_token_instead_of_refreshing() -> None:
    assert decide(family()) == "adopt"


def test_a_follower_waits_for_a_holder_whose_claim_is_live() -> None:
    record = family(received_at=NOW, claim_seconds=30)
    decision = plan(
        seen(record), me="pod-a", bootstrap="rt-0", have_expiry=NOW + 60, now_mono=101,
        now_wall=NOW,
    )  # fmt: skip
    assert decision.action == "wait"
    assert decision.until_mono == 130.0  # counted from when this pod saw the write


def test_an_idle_holder_late_for_its_refresh_loses_the_family_at_once() -> None:
    # Taking the family from a holder that is not presenting cannot cause a replay, so a
    # pod that only just read the record need not wait out a whole claim.
    late = family(received_at=NOW - 31, claim_seconds=30)
    assert decide(late, have_expiry=NOW + 29, now_mono=101) == "present"


def test_a_presenting_holder_keeps_its_claim_on_the_reader_clock_whatever_the_wall_says() -> None:
    # The holder may be waiting for the IdP right now; only our own clock counts.
    busy = family(received_at=NOW - 300, claim_seconds=30, presenting=fingerprint("rt-1"))
    assert decide(busy, have_expiry=NOW + 50, now_mono=129.9) == "wait"
    assert decide(busy, have_expiry=NOW + 50, now_mono=130.0) == "present"


def test_the_holder_presents_and_nobody_holding_means_anyone_may() -> None:
    assert decide(family(holder="pod-a"), have_expiry=NOW + 50) == "present"
    assert decide(family(holder=None), have_expiry=NOW + 50) == "present"


def test_a_rejected_family_is_never_presented_again() -> None:
    dead = family(rejected=True, refresh_token=None, access_token=None)
    assert decide(dead, now_mono=1000) == "rejected"
    # ...until a person puts a new bootstrap token in the Secret: a new family.
    assert decide(dead, bootstrap="rt-new") == "seed"


def test_an_old_bootstrap_in_a_stale_volume_is_not_a_reseed() -> None:
    record = family(bootstraps=(fingerprint("rt-new"), fingerprint("rt-0")))
    assert decide(record, bootstrap="rt-0", have_expiry=NOW + 50) == "wait"


def test_the_claim_outlives_the_planned_refresh_but_not_the_token() -> None:
    assert claim_seconds(60, ratio=0.7, jitter=0.1, lease=30) == pytest.approx(48 + 6)
    assert claim_seconds(3600, ratio=0.7, jitter=0.1, lease=30) == pytest.approx(2880 + 30)
    assert claim_seconds(10, ratio=0.5, jitter=0.05, lease=30) < 10


def test_the_record_round_trips_and_garbage_reads_as_no_family() -> None:
    record = family(presenting=fingerprint("rt-1"), rotated_at=NOW, rotated_by="pod-b")
    assert decode({"token-refresher-family": encode(record)}) == record
    assert decode({"token-refresher-family": "not base64!"}) is None
    assert decode({"refresh": "cnQtMA=="}) is None
    assert decode(None) is None


def test_a_family_is_only_for_the_refresh_token_grant_and_names_a_secret() -> None:
    from pydantic import ValidationError

    from token_refresher.settings import config_errors

    base = {
        "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
        "TOKEN_REFRESHER_CLIENT_ID": "billing",
        "TOKEN_REFRESHER_CLIENT_AUTH": "none",
    }
    with pytest.raises(ValidationError) as caught:
        Settings.from_env({**base, "TOKEN_REFRESHER_FAMILY_SECRET": "billing-oauth"})
    assert any(
        line.startswith("TOKEN_REFRESHER_FAMILY_SECRET: only with TOKEN_REFRESHER_GRANT=")
        for line in config_errors(caught.value)
    )
    with pytest.raises(ValidationError) as caught:
        Settings.from_env(
            {
                **base,
                "TOKEN_REFRESHER_GRANT": "refresh_token",
                "TOKEN_REFRESHER_REFRESH_TOKEN_FILE": "/rt",
                "TOKEN_REFRESHER_FAMILY_SECRET": "Billing_OAuth",
            }
        )
    assert config_errors(caught.value) == [
        "TOKEN_REFRESHER_FAMILY_SECRET: must be the name of a Secret (lower case, digits, "
        "'-' and '.')"
    ]
    with pytest.raises(ValidationError) as caught:
        Settings.from_env(
            {
                **base,
                "TOKEN_REFRESHER_GRANT": "refresh_token",
                "TOKEN_REFRESHER_REFRESH_TOKEN_FILE": "/rt",
                "TOKEN_REFRESHER_FAMILY_SECRET": "billing-oauth",
                "TOKEN_REFRESHER_FAMILY_LEASE": "10",
            }
        )
    assert config_errors(caught.value) == [
        "TOKEN_REFRESHER_FAMILY_LEASE: must be longer than TOKEN_REFRESHER_TIMEOUT (10 s), "
        "so no pod takes over from a holder still waiting for the identity provider"
    ]


# --- pods against an in-memory apiserver and a rotating IdP ---------------------------


@dataclass
class FakeApiserver:
    """One namespace's Secrets with resourceVersion preconditions and single-object
    watches; `forbidden` verbs answer 403, `down` makes every request fail."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    down: bool = False
    # Seconds a patch's answer takes after the patch was applied: a write a stop cuts
    # short may still have happened.
    answer_delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    version: int = 1
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, name: str, data: dict[str, str]) -> None:
        self.version += 1
        self.objects[name] = {
            "metadata": {"name": name, "namespace": NS, "resourceVersion": str(self.version)},
            "data": dict(data),
        }
        self.changed.set()
        self.changed = asyncio.Event()

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        url = urlsplit(str(request.url))
        query = parse_qs(url.query)
        watch = query.get("watch") == ["true"]
        verb = {"GET": "watch" if watch else "get", "PATCH": "patch"}[request.method]
        self.requests.append(verb)
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        if verb in self.forbidden:
            message = f'secrets "{NAME}" is forbidden: cannot {verb} resource "secrets"'
            return httpx2.Response(403, json={"kind": "Status", "message": message})
        if watch:
            name = query["fieldSelector"][0].removeprefix("metadata.name=")
            since = query["resourceVersion"][0]
            obj = self.objects[name]
            if obj["metadata"]["resourceVersion"] == since:
                waiter = self.changed
                timeout = float(query["timeoutSeconds"][0])
                try:
                    await asyncio.wait_for(waiter.wait(), timeout)
                except TimeoutError:
                    return httpx2.Response(200, content=b"")
            event = {"type": "MODIFIED", "object": self.objects[name]}
            return httpx2.Response(200, content=json.dumps(event).encode() + b"\n")
        name = url.path.rsplit("/", 1)[1]
        if name not in self.objects:
            return httpx2.Response(404, json={"kind": "Status", "message": "not found"})
        obj = self.objects[name]
        if verb == "get":
            return httpx2.Response(200, json=obj)
        patch = json.loads(request.content)
        if patch["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            return httpx2.Response(409, json={"kind": "Status", "message": "conflict"})
        data = dict(obj["data"])
        for key, value in patch["data"].items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.put(name, data)
        answer = httpx2.Response(200, json=self.objects[name])
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return answer


@dataclass
class RotatingIdP:
    """Refresh tokens rotate on every use; a used one presented again revokes them all."""

    valid: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    presented: list[str] = field(default_factory=list)
    revoked: bool = False
    lifetime: float = 60.0

    def mint(self) -> str:
        token = "rt-" + secrets.token_hex(8)
        self.valid.add(token)
        return token

    async def present(self, refresh_token: str) -> Token:
        self.presented.append(refresh_token)
        if refresh_token in self.used:
            self.revoked = True
            self.valid.clear()
        if refresh_token not in self.valid:
            raise TokenEndpointError(
                "token endpoint rejected: invalid_grant", error="invalid_grant", permanent=True
            )
        self.valid.discard(refresh_token)
        self.used.add(refresh_token)
        return Token(
            access_token="at-" + secrets.token_hex(8),
            token_type="Bearer",
            lifetime=self.lifetime,
            lifetime_source="expires_in",
            received_mono=time.monotonic(),
            received_wall=time.time(),
            refresh_token=self.mint(),
        )

    def replays(self) -> list[str]:
        return [t for t in set(self.presented) if self.presented.count(t) > 1]


@pytest.fixture
def apiserver() -> FakeApiserver:
    return FakeApiserver()


@pytest.fixture
def rotating_idp() -> RotatingIdP:
    return RotatingIdP()


@pytest.fixture
async def pods(tmp_path: Path, apiserver: FakeApiserver, rotating_idp: RotatingIdP):  # type: ignore[no-untyped-def]
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(rotating_idp.mint())
    apiserver.put(NAME, {"refresh": "Ym9vdHN0cmFw"})
    (tmp_path / "sa-token").write_text("sa-token")
    clients: list[KubeClient] = []

    def make(name: str, *, lease: float = 30.0, uid: str | None = None) -> FamilyMember:
        settings = Settings.from_env(
            {
                **({"TOKEN_REFRESHER_POD_UID": uid} if uid else {}),
                "TOKEN_REFRESHER_TOKEN_URL": "https://idp.example/token",
                "TOKEN_REFRESHER_GRANT": "refresh_token",
                "TOKEN_REFRESHER_CLIENT_ID": "billing",
                "TOKEN_REFRESHER_CLIENT_AUTH": "none",
                "TOKEN_REFRESHER_REFRESH_TOKEN_FILE": str(bootstrap),
                "TOKEN_REFRESHER_FAMILY_SECRET": NAME,
                "TOKEN_REFRESHER_FAMILY_LEASE": str(lease),
                "TOKEN_REFRESHER_TIMEOUT": str(lease / 2),
                "TOKEN_REFRESHER_POD_NAME": name,
            }
        )
        kube = KubeClient(
            api_url="https://apiserver.test",
            namespace=NS,
            token_file=tmp_path / "sa-token",
            ca_file=None,
            transport=httpx2.MockTransport(apiserver.handler),
        )
        clients.append(kube)
        return FamilyMember(settings, kube, SystemClock())

    make.bootstrap = bootstrap  # type: ignore[attr-defined]
    yield make
    for kube in clients:
        await kube.aclose()


async def test_only_the_holder_presents_the_refresh_token(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    a, b, c = pods("pod-a"), pods("pod-b"), pods("pod-c")
    first = await a.fetch(rotating_idp.present)
    assert a.holds
    assert a.role == "holder"
    for follower in (b, c):
        token = await follower.fetch(rotating_idp.present)
        assert token.access_token == first.access_token
        assert follower.role == "follower"
    assert len(rotating_idp.presented) == 1
    assert b.status()["holder"] == "pod-a"


async def test_followers_wake_on_the_holder_write(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    a, b = pods("pod-a"), pods("pod-b")
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    waiting = asyncio.create_task(b.fetch(rotating_idp.present))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # a follower waits for the holder, it does not refresh
    second = await a.fetch(rotating_idp.present)
    adopted = await asyncio.wait_for(waiting, 5)
    assert adopted.access_token == second.access_token
    assert rotating_idp.replays() == []
    assert a.status()["rotations"] == 2


async def test_a_follower_takes_over_when_the_holder_stops(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    a, b = pods("pod-a", lease=0.3), pods("pod-b", lease=0.3)
    rotating_idp.lifetime = 1.0  # claim: 0.8 s planned + 0.1 s
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    # pod-a is gone without a word (SIGKILL): pod-b waits out the claim, then presents
    # the token pod-a rotated to — never the one before it.
    token = await asyncio.wait_for(b.fetch(rotating_idp.present), 5)
    assert b.holds
    assert token.access_token.startswith("at-")
    assert len(rotating_idp.presented) == 2
    assert rotating_idp.replays() == []
    assert not rotating_idp.revoked


async def test_a_released_family_is_taken_at_once(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    a, b = pods("pod-a"), pods("pod-b")
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    await a.release()
    assert b.status()["holder"] == "pod-a"
    started = time.monotonic()
    await asyncio.wait_for(b.fetch(rotating_idp.present), 5)
    assert b.holds
    assert time.monotonic() - started < 1  # no claim period to wait out
    assert rotating_idp.replays() == []


async def test_racing_pods_present_the_bootstrap_once(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    members = [pods(f"pod-{i}") for i in range(5)]
    tokens = await asyncio.gather(*(m.fetch(rotating_idp.present) for m in members))
    assert len(rotating_idp.presented) == 1
    assert len({t.access_token for t in tokens}) == 1
    assert sum(m.holds for m in members) == 1


async def test_a_rotation_the_apiserver_missed_is_written_when_it_is_back(
    pods, rotating_idp, apiserver
) -> None:  # type: ignore[no-untyped-def]
    a, b = pods("pod-a", lease=2), pods("pod-b", lease=2)
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    real_present = rotating_idp.present

    async def present_then_lose_the_apiserver(refresh_token: str) -> Token:
        token = await real_present(refresh_token)
        apiserver.down = True
        asyncio.get_running_loop().call_later(0.8, setattr, apiserver, "down", False)
        return token

    fresh = await a.fetch(present_then_lose_the_apiserver)
    stored = decode(apiserver.objects[NAME]["data"])
    assert stored is not None
    assert stored.refresh_token == fresh.refresh_token
    assert stored.presenting is None
    adopted = await asyncio.wait_for(b.fetch(rotating_idp.present), 5)
    assert adopted.access_token == fresh.access_token
    assert rotating_idp.replays() == []


async def test_missing_rbac_is_a_permanent_error_naming_the_permission(
    pods, rotating_idp, apiserver
) -> None:  # type: ignore[no-untyped-def]
    apiserver.forbidden = {"patch"}
    a = pods("pod-a")
    with pytest.raises(CoordinationError) as caught:
        await a.fetch(rotating_idp.present)
    assert caught.value.permanent
    assert caught.value.error == "forbidden"
    message = str(caught.value)
    assert f"patch secret {NS}/{NAME}" in message
    assert f'verbs get, watch and patch on secrets with resourceNames ["{NAME}"]' in message
    assert rotating_idp.presented == []  # nothing reached the IdP


async def test_a_rejected_family_waits_for_a_new_bootstrap_token(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    a, b = pods("pod-a"), pods("pod-b")
    rotating_idp.valid.clear()  # the bootstrap token is dead at the IdP
    with pytest.raises(TokenEndpointError):
        await a.fetch(rotating_idp.present)
    with pytest.raises(CoordinationError) as caught:
        await b.fetch(rotating_idp.present)
    assert caught.value.error == "invalid_grant"
    assert "put a new refresh token in the bootstrap Secret" in str(caught.value)
    assert len(rotating_idp.presented) == 1  # pod-b never presented the dead token
    # A person re-seeds: a new bootstrap token in the Secret (the kubelet updates the file).
    pods.bootstrap.write_text(rotating_idp.mint())
    token = await b.fetch(rotating_idp.present)
    assert b.holds
    assert token.access_token.startswith("at-")


async def test_a_rotation_not_stored_yet_is_never_followed_by_a_second_presentation(
    pods, rotating_idp, apiserver, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import token_refresher.holder

    monkeypatch.setattr(token_refresher.holder, "_STOP_GRACE", 0.2)
    a = pods("pod-a")
    await a.fetch(rotating_idp.present)
    real_present = rotating_idp.present

    async def present_then_lose_the_apiserver(refresh_token: str) -> Token:
        token = await real_present(refresh_token)
        apiserver.down = True
        return token

    await a.fetch(present_then_lose_the_apiserver)  # the token, but not stored
    assert a.status()["unwritten_rotation"] is True
    with pytest.raises(CoordinationError) as caught:
        await a.fetch(rotating_idp.present)
    assert caught.value.error == "apiserver_unavailable"
    apiserver.down = False
    await a.fetch(rotating_idp.present)  # stores it first, then refreshes with it
    assert a.status()["unwritten_rotation"] is False
    assert len(rotating_idp.presented) == 3
    assert rotating_idp.replays() == []


async def test_a_stop_while_presenting_lets_the_rotated_token_be_stored(
    pods, rotating_idp, apiserver
) -> None:  # type: ignore[no-untyped-def]
    a = pods("pod-a")
    await a.fetch(rotating_idp.present)

    async def slow_present(refresh_token: str) -> Token:
        await asyncio.sleep(0.3)
        return await rotating_idp.present(refresh_token)

    fetching = asyncio.create_task(a.fetch(slow_present))
    await asyncio.sleep(0.1)
    fetching.cancel()  # SIGTERM while the IdP is answering
    with pytest.raises(asyncio.CancelledError):
        await fetching
    stored = decode(apiserver.objects[NAME]["data"])
    assert stored is not None
    assert stored.presenting is None
    assert stored.refresh_token in rotating_idp.valid  # the newest, not the used one
    await a.release()
    assert decode(apiserver.objects[NAME]["data"]).holder is None


async def test_a_stopping_pod_never_claims_the_family(pods, rotating_idp, apiserver) -> None:  # type: ignore[no-untyped-def]
    # A scale-down: the holder releases, and a pod that is itself stopping sees that
    # first. Claiming now would leave a `presenting` claim its SIGKILL never ends.
    a, b = pods("pod-a"), pods("pod-b")
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    await a.release()
    apiserver.requests.clear()
    b.stop()
    with pytest.raises(asyncio.CancelledError):
        await b.fetch(rotating_idp.present)
    assert "patch" not in apiserver.requests
    assert decode(apiserver.objects[NAME]["data"]).holder is None
    assert len(rotating_idp.presented) == 1


async def test_a_claim_a_stop_cut_short_is_given_back(pods, rotating_idp, apiserver) -> None:  # type: ignore[no-untyped-def]
    a, b, c = pods("pod-a"), pods("pod-b"), pods("pod-c")
    for pod in (a, b, c):
        await pod.fetch(rotating_idp.present)
    await a.release()
    apiserver.answer_delay = 5.0
    claiming = asyncio.create_task(b.fetch(rotating_idp.present))
    await wait_until_async(
        "pod-b's claim applied",
        lambda: decode(apiserver.objects[NAME]["data"]).holder,
        5,
        every=0.01,
    )
    claiming.cancel()  # SIGTERM before the apiserver's answer came back
    with pytest.raises(asyncio.CancelledError):
        await claiming
    apiserver.answer_delay = 0.0
    stored = decode(apiserver.objects[NAME]["data"])
    assert (stored.holder, stored.presenting is not None) == ("pod-b", True)
    await b.release()  # what the sidecar does on its way out
    assert decode(apiserver.objects[NAME]["data"]).holder is None
    # So the next pod presents at once instead of waiting out a 30-second claim.
    started = time.monotonic()
    await asyncio.wait_for(c.fetch(rotating_idp.present), 25)
    assert time.monotonic() - started < 20  # the claim's lease is 30 s
    assert c.holds
    assert len(rotating_idp.presented) == 2
    assert rotating_idp.replays() == []


async def test_a_pod_recreated_under_the_same_name_is_someone_else(pods, rotating_idp) -> None:  # type: ignore[no-untyped-def]
    # A StatefulSet's pod-0, force-deleted on a lost node, and its successor pod-0.
    old = pods("pod-0", uid="11111111-aaaa-4000-8000-000000000000")
    new = pods("pod-0", uid="22222222-bbbb-4000-8000-000000000000")
    await old.fetch(rotating_idp.present)
    assert old.status()["holder"] == "pod-0@11111111"
    await new.fetch(rotating_idp.present)
    assert new.status()["role"] == "follower"
    assert len(rotating_idp.presented) == 1


async def test_an_idle_follower_only_renews_its_watch(
    pods, rotating_idp, apiserver, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import token_refresher.holder

    monkeypatch.setattr(token_refresher.holder, "_MAX_WATCH", 0.2)
    a, b = pods("pod-a"), pods("pod-b")
    await a.fetch(rotating_idp.present)
    await b.fetch(rotating_idp.present)
    apiserver.requests.clear()
    waiting = asyncio.create_task(b.fetch(rotating_idp.present))
    await asyncio.sleep(0.9)  # four watch periods with nothing to see
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert apiserver.requests.count("get") == 1  # the fetch's first read, no more
    assert apiserver.requests.count("watch") >= 4


async def test_no_service_account_mount_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    kube = KubeClient(
        api_url="https://apiserver.test",
        namespace=NS,
        token_file=tmp_path / "missing" / "token",
        ca_file=tmp_path / "missing" / "ca.crt",
    )
    try:
        with pytest.raises(CoordinationError) as caught:
            await kube.get_secret(NAME)
    finally:
        await kube.aclose()
    assert caught.value.permanent
    assert f"cannot read the kube-apiserver's CA bundle {tmp_path}/missing/ca.crt" in str(
        caught.value
    )
    assert "automountServiceAccountToken" in str(caught.value)
