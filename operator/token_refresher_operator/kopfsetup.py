"""kopf as the operator runs it: the registry of the one watch, and its settings.

kopf is kept for what it does well, the safety-net watch behind `SidecarNotInjected`
(`safetynet`) and the login, and is set up here so that watch costs as little as a
watch on every pod can: no diff base (`NoDiffBase`), no scanning of CRDs or namespaces,
and the start-up heap left out of the garbage collector's full passes. /mutate is not
kopf's: `webhook.serve_webhook` answers it (docs/benchmarks.md, section 3).
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterable
from typing import Any

import kopf

from token_refresher_operator.annotations import INJECT
from token_refresher_operator.config import OperatorSettings
from token_refresher_operator.events import REPORTING_COMPONENT
from token_refresher_operator.safetynet import SidecarWatch

__all__ = [
    "NoDiffBase",
    "build_registry",
    "freeze_startup_heap",
    "kopf_settings",
    "operator_identity",
]


def operator_identity() -> str:
    """This replica's identity for kopf: `POD_ID` when set (kopf's convention), else the host name.

    kopf derives one itself when given none, from `getpass.getuser()`, which raises
    KeyError in the operator image: it runs as UID 65532, which has no passwd entry (nor
    does it in the official python images), so the operator crash-looped before starting.
    In a pod the host name is the pod's name, which is what kopf's `POD_ID` would say too.
    """
    return os.environ.get("POD_ID") or socket.gethostname()


def build_registry(*, watch: SidecarWatch) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the operator's handlers (nothing global).

    No admission handler: /mutate is served by `webhook.serve_webhook`, outside kopf.
    """
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
    kopf.on.event(
        "pods",
        id="sidecar-not-injected",
        annotations={INJECT: "true"},
        when=watch.concerns,
        registry=registry,
    )(watch.on_pod)
    return registry


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for change handlers (`@on.create`, `@on.update`...): none here.

    On every event of every pod, kopf builds an "essence" of the pod and of its stored
    last-handled state and diffs the two (three deep copies of the pod), whether or not a
    handler will read the diff. Only change handlers do, and the operator has one
    `@on.event` watch (safetynet.py); this storage makes that bookkeeping nothing, which
    was most of the CPU kopf spent per pod event (docs/benchmarks.md).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's settings for the watch: no diff base, our Event names, no scanning."""
    ks = kopf.OperatorSettings()
    ks.persistence.diffbase_storage = NoDiffBase()
    ks.posting.reporting_component = REPORTING_COMPONENT
    ks.posting.reporting_instance = socket.gethostname()
    ks.posting.event_name_prefix = "token-refresher-"
    # Pods are a built-in resource: there are no CRDs or namespaces to follow, and not
    # watching them keeps the RBAC to pods and events.
    ks.scanning.disabled = True
    return ks


def freeze_startup_heap() -> None:
    """Leave what exists now out of the garbage collector's full passes (`gc.freeze`).

    The imports (kopf, aiohttp, the kubernetes client, pydantic) leave about 190,000
    objects that live as long as the process. CPython's full collection walks all of them
    each time, and the watch makes one every few hundred pod events (each event's objects
    age into the oldest generation): about 0.1 s per pass, 0.3 ms per pod on average
    (docs/benchmarks.md). Frozen, they are never scanned again; the objects made per
    event are collected as before. The garbage of the start-up is collected first, so it
    is not frozen with the rest.
    """
    gc.collect()
    gc.freeze()
