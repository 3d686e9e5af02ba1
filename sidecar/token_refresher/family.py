"""A refresh-token family shared by replicas: what the family Secret holds, and who acts.

IdPs that rotate refresh tokens treat a token presented twice as theft and revoke the
whole chain ("family"). Pods of one workload started from one bootstrap token must
therefore act as one client: exactly one of them — the holder — presents the refresh
token, and the others take the access token it got. The family lives in one key of
one Secret (`FAMILY_KEY`), updated only by patches that carry the resourceVersion they
were based on, so every write is a compare-and-swap: the claim, the rotated refresh
token and the current access token change together or not at all.

The rule that keeps the IdP from seeing a refresh token twice: a pod presents the
family's refresh token only after it has written, by compare-and-swap, a record that
names it holder and says which token it is presenting (`presenting`). Two pods can then
only present the same token if the second one took over a `presenting` claim that ran
out — measured on its own monotonic clock — while the first had presented and not yet
written the result: the first died, or lost the apiserver for longer than its claim
(docs/family.md names these windows). Taking the family from an idle holder is always
safe, so that can happen as soon as the holder is late for its refresh.

Everything here is pure — plain data in, a decision out — so the protocol is tested
without a cluster; `holder` is the shell that does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "FAMILY_KEY",
    "FamilyRecord",
    "Observation",
    "Plan",
    "claim_seconds",
    "decode",
    "encode",
    "fingerprint",
    "plan",
]

FAMILY_KEY = "token-refresher-family"
# A family remembers this many bootstrap tokens it grew from, so a pod whose Secret
# volume the kubelet has not refreshed yet does not mistake an old one for a re-seed.
_REMEMBERED_BOOTSTRAPS = 8


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FamilyRecord:
    """The family as stored. Times are wall-clock Unix seconds written by the holder;
    `claim_seconds` is a duration, measured by each reader from when it saw the write,
    so pods never compare each other's clocks."""

    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"
    scope: str | None = None
    received_at: float | None = None  # when the holder asked for the access token
    lifetime: float | None = None
    holder: str | None = None
    claim_seconds: float = 0.0
    presenting: str | None = None  # fingerprint of the refresh token being presented
    bootstraps: tuple[str, ...] = ()  # fingerprints of the bootstrap tokens it grew from
    rotated_at: float | None = None
    rotated_by: str | None = None
    rotations: int = 0
    rejected: bool = False  # the IdP answered invalid_grant: nobody presents it again

    @property
    def expires_at(self) -> float | None:
        if self.received_at is None or self.lifetime is None or self.access_token is None:
            return None
        return self.received_at + self.lifetime

    def seeded(self, bootstrap: str, *, holder: str, claim: float) -> FamilyRecord:
        """A new family from `bootstrap`, claimed by `holder`, about to present it."""
        remembered = (fingerprint(bootstrap), *self.bootstraps)[:_REMEMBERED_BOOTSTRAPS]
        return FamilyRecord(
            refresh_token=bootstrap,
            holder=holder,
            claim_seconds=claim,
            presenting=fingerprint(bootstrap),
            bootstraps=remembered,
        )

    def claimed(self, holder: str, *, claim: float) -> FamilyRecord:
        """This record, claimed by `holder` to present its refresh token now."""
        assert self.refresh_token is not None
        return replace(
            self, holder=holder, claim_seconds=claim, presenting=fingerprint(self.refresh_token)
        )

    def released(self) -> FamilyRecord:
        return replace(self, holder=None, claim_seconds=0.0, presenting=None)


def encode(record: FamilyRecord) -> str:
    """The base64 value of `FAMILY_KEY` in the Secret's data."""
    document = {
        "refresh_token": record.refresh_token,
        "access_token": record.access_token,
        "token_type": record.token_type,
        "scope": record.scope,
        "received_at": record.received_at,
        "lifetime": record.lifetime,
        "holder": record.holder,
        "claim_seconds": record.claim_seconds,
        "presenting": record.presenting,
        "bootstraps": list(record.bootstraps),
        "rotated_at": record.rotated_at,
        "rotated_by": record.rotated_by,
        "rotations": record.rotations,
        "rejected": record.rejected,
    }
    return base64.b64encode(json.dumps(document).encode("utf-8")).decode("ascii")


def decode(data: dict[str, Any] | None) -> FamilyRecord | None:
    """The family in a Secret's `data`, or None when there is none (or it is garbage:
    then the bootstrap token starts a new one, which is what a person clearing it wants)."""
    raw = (data or {}).get(FAMILY_KEY)
    if not isinstance(raw, str):
        return None
    try:
        document = json.loads(base64.b64decode(raw, validate=True))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) and value else None

    def number(key: str) -> float | None:
        value = document.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None

    bootstraps = document.get("bootstraps")
    return FamilyRecord(
        refresh_token=text("refresh_token"),
        access_token=text("access_token"),
        token_type=text("token_type") or "Bearer",
        scope=text("scope"),
        received_at=number("received_at"),
        lifetime=number("lifetime"),
        holder=text("holder"),
        claim_seconds=number("claim_seconds") or 0.0,
        presenting=text("presenting"),
        bootstraps=tuple(b for b in bootstraps if isinstance(b, str))
        if isinstance(bootstraps, list)
        else (),
        rotated_at=number("rotated_at"),
        rotated_by=text("rotated_by"),
        rotations=int(number("rotations") or 0),
        rejected=document.get("rejected") is True,
    )


@dataclass(frozen=True)
class Observation:
    """A record as this pod read it: at which resourceVersion, and when (monotonic)
    this pod first saw that version."""

    record: FamilyRecord | None
    resource_version: str
    seen_mono: float

    def claim_deadline(self) -> float:
        """When, on this pod's monotonic clock, the holder's claim has certainly run out.

        Counted from when *we* saw the write, which is never before it was made: every
        reader's deadline is at or after the holder's own, whatever the clocks say."""
        record = self.record
        if record is None or record.holder is None:
            return self.seen_mono
        return self.seen_mono + record.claim_seconds


Action = Literal["seed", "adopt", "present", "wait", "rejected"]


@dataclass(frozen=True)
class Plan:
    action: Action
    why: str
    until_mono: float | None = None  # for "wait": when to decide again at the latest


def plan(
    observed: Observation,
    *,
    me: str,
    bootstrap: str | None,
    have_expiry: float | None,
    now_mono: float,
    now_wall: float,
) -> Plan:
    """What this pod does next with the family, given what it read.

    seed     write a new family from the bootstrap token (none yet, or a person put a
             new one in the Secret), claimed by us, then present it
    adopt    take the family's access token: it outlives the one we have
    present  claim the family (ours already, or the holder's claim ran out) and
             present its refresh token
    wait     another pod holds a live claim; wait for its write, or `until_mono`
    rejected the IdP rejected the family and no new bootstrap token has appeared
    """
    record = observed.record
    new_bootstrap = bootstrap is not None and (
        record is None or fingerprint(bootstrap) not in record.bootstraps
    )
    if record is None:
        if bootstrap is None:
            return Plan("rejected", "no family and no bootstrap refresh token")
        return Plan("seed", "no family yet: starting one from the bootstrap token")
    if new_bootstrap:
        return Plan("seed", "a new bootstrap refresh token: starting a new family from it")
    expires = record.expires_at
    if (
        expires is not None
        and expires > now_wall
        and (have_expiry is None or expires > have_expiry)
    ):
        return Plan("adopt", f"the family's access token from {record.holder or 'a holder'}")
    if record.rejected or record.refresh_token is None:
        return Plan("rejected", "the identity provider rejected the family's refresh token")
    if record.holder == me:
        return Plan("present", "this pod holds the family")
    if record.holder is None:
        return Plan("present", "nobody holds the family")
    deadline = observed.claim_deadline()
    if record.presenting is not None:
        # The holder may be waiting for the IdP's answer right now: presenting the same
        # token before its claim ran out (on our clock) could be a replay.
        if now_mono < deadline:
            return Plan("wait", f"{record.holder} is refreshing", until_mono=deadline)
        return Plan(
            "present",
            f"{record.holder} stopped answering while presenting the refresh token; "
            "presenting it again (the IdP accepts that only within its reuse leeway)",
        )
    # The holder is idle: taking the family from it cannot make the IdP see a token
    # twice (its next claim would fail), so its own schedule may end the claim early —
    # what a pod that started long after the holder's write needs to know.
    due = None if record.received_at is None else record.received_at + record.claim_seconds
    if due is not None and now_wall >= due:
        return Plan("present", f"{record.holder} did not refresh the family on time")
    if now_mono >= deadline:
        return Plan("present", f"the claim of {record.holder} ran out")
    until = deadline if due is None else min(deadline, now_mono + (due - now_wall))
    return Plan("wait", f"{record.holder} holds the family", until_mono=until)


def claim_seconds(lifetime: float, *, ratio: float, jitter: float, lease: float) -> float:
    """How long a holder's claim lasts after it wrote a fresh access token: until its
    latest planned refresh, plus `lease` for that refresh to happen — but short enough
    that another pod takes over before the token expires, should the holder be gone."""
    planned = lifetime * (ratio + jitter)
    return planned + max(0.0, min(lease, (lifetime - planned) / 2))
