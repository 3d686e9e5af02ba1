"""The safety net: a Warning Event on annotated pods that run without the sidecar.

A pod can slip past the webhook: it was created while the webhook configuration was
missing, or with failurePolicy Ignore while the operator was down, or in a namespace the
webhook never sees. The pod then runs without a token and nobody is told. The operator
watches pods and posts `SidecarNotInjected` on each such pod, once per pod per operator
process, so `kubectl describe pod` says what went wrong.

Pods in a namespace excluded from injection (kube-system, the operator's own, and the
chart's `webhook.excludedNamespaces`) get the Warning too, with another message: the pod
asked for a token and runs without one, which is what this net is for, whatever the
cause. Silence would leave its author guessing; the message says that recreating the pod
will not help, and what will.

This is a kopf `@on.event` handler rather than `@on.create`/`@on.resume`: those store
their progress in annotations on every pod they handle, which would mean writing to the
users' pods (and needing the permission to). A watch handler writes nothing; it sees the
initial listing (resume) and every creation (create) all the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from token_refresher_operator.annotations import wants_injection
from token_refresher_operator.manifests import Pod
from token_refresher_operator.metrics import OperatorMetrics
from token_refresher_operator.patch import (
    NEVER_INJECTED_NAMESPACES,
    SIDECAR_NAME,
    has_sidecar,
)

__all__ = ["REASON", "SidecarWatch", "not_injected_message"]

REASON = "SidecarNotInjected"
_REMEMBERED = 10_000  # pod UIDs already warned about; oldest forgotten first


def not_injected_message(
    *, pod: Pod, operator_namespace: str, excluded_namespaces: Iterable[str] = ()
) -> str | None:
    """The Event message for an annotated pod without the sidecar, or None (pure)."""
    meta = pod.get("metadata", {})
    if not wants_injection(meta.get("annotations")) or has_sidecar(pod):
        return None
    namespace = meta.get("namespace", "")
    head = (
        f'the pod is annotated token-refresher.io/inject: "true" but runs without the '
        f"{SIDECAR_NAME} sidecar, so it gets no token"
    )
    excluded = NEVER_INJECTED_NAMESPACES | {operator_namespace} | set(excluded_namespaces)
    if namespace in excluded:
        return (
            f"{head}: namespace {namespace} is excluded from injection (kube-system and the "
            "operator's namespace always are, others by the chart's "
            "webhook.excludedNamespaces), so recreating the pod will not help: run it in "
            "another namespace, or remove the annotation"
        )
    return (
        f"{head}: it was admitted while the injection webhook was not called (webhook "
        "configuration missing, or the operator unreachable with failurePolicy Ignore); "
        "delete the pod to have it recreated with the sidecar"
    )


@dataclass
class SidecarWatch:
    """Registered with kopf as `@on.event('pods')`; see the module docstring."""

    operator_namespace: str
    excluded_namespaces: frozenset[str] = frozenset()
    warned: OrderedDict[str, None] = field(default_factory=OrderedDict)
    posted: int = 0
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics, repr=False)

    def concerns(self, *, body: kopf.Body, **_: Any) -> bool:
        """kopf's `when=` filter: only pods without the sidecar can need a warning.

        Injected pods, nearly all of the annotated ones, then cost kopf's watch no more
        than any other pod: kopf runs its handler machinery only for pods that pass.
        """
        return not has_sidecar(cast(Pod, body))

    async def on_pod(self, *, body: kopf.Body, type: str | None, **_: Any) -> None:
        uid = str(body.get("metadata", {}).get("uid", ""))
        if type == "DELETED":
            self.warned.pop(uid, None)
            return
        if not uid or uid in self.warned:
            return
        message = not_injected_message(
            pod=cast(Pod, dict(body)),
            operator_namespace=self.operator_namespace,
            excluded_namespaces=self.excluded_namespaces,
        )
        if message is None:
            return
        self.warned[uid] = None
        while len(self.warned) > _REMEMBERED:
            self.warned.popitem(last=False)
        self.posted += 1
        self.metrics.sidecar_not_injected.inc()
        # Events are auxiliary: kopf posts them in the background and never fails the
        # handling when posting does.
        kopf.warn(body, reason=REASON, message=message)
