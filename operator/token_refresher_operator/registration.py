"""The MutatingWebhookConfiguration that routes annotated pods to `/mutate`.

In production the chart owns this object. In DEV mode the operator writes it itself
(`token-refresher-dev`), pointing at its own self-signed endpoint on 127.0.0.1. kopf's
`settings.admission.managed` could do that too, but it sets no matchConditions,
namespaceSelector or reinvocationPolicy and a fixed 30 s timeout: the apiserver would
then call the webhook for every pod in the cluster, and a dead operator would block them
all. With the match condition below, only pods that ask for injection ever reach us.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from token_refresher_operator.annotations import INJECT
from token_refresher_operator.patch import NEVER_INJECTED_NAMESPACES

__all__ = [
    "DEV_CONFIGURATION_NAME",
    "WEBHOOK_NAME",
    "apply_configuration",
    "delete_configuration",
    "webhook_configuration",
]

logger = logging.getLogger(__name__)

DEV_CONFIGURATION_NAME = "token-refresher-dev"
WEBHOOK_NAME = "inject.token-refresher.io"

# CEL (matchConditions, GA in Kubernetes 1.30): the apiserver skips the call entirely for
# pods that do not opt in, so a webhook outage can only ever affect those pods.
MATCH_INJECT = (
    "has(object.metadata.annotations) && "
    f"'{INJECT}' in object.metadata.annotations && "
    f"object.metadata.annotations['{INJECT}'] == 'true'"
)


def webhook_configuration(
    *, name: str, url: str, ca_bundle: bytes, operator_namespace: str
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration body (pure)."""
    excluded = sorted(NEVER_INJECTED_NAMESPACES | {operator_namespace})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "token-refresher"},
        },
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": url,
                    "caBundle": base64.b64encode(ca_bundle).decode("ascii"),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": excluded,
                        }
                    ]
                },
                "matchConditions": [{"name": "inject-annotation", "expression": MATCH_INJECT}],
                "matchPolicy": "Equivalent",
                # A pod that asked for a sidecar and did not get one is worse than a pod
                # that waits: fail closed (only annotated pods can be affected, see above).
                "failurePolicy": "Fail",
                # The patch is computed from the request alone; dry-run is safe.
                "sideEffects": "None",
                # One call per pod. IfNeeded made the apiserver call again for every pod
                # (its ServiceAccount plugin mounts the API token into our sidecar after
                # us), and that call could only answer "already injected" (README).
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 10,
            }
        ],
    }


def _apply(api_client: Any, body: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    # Plain dicts, not the client's models: the body above is the whole truth.
    api: Any = client.AdmissionregistrationV1Api(api_client)
    name = body["metadata"]["name"]
    try:
        api.create_mutating_webhook_configuration(body)
        logger.info("created MutatingWebhookConfiguration %s", name)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = api.read_mutating_webhook_configuration(name)
    body = {**body, "metadata": {**body["metadata"]}}
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    api.replace_mutating_webhook_configuration(name, body)
    logger.info("updated MutatingWebhookConfiguration %s", name)


async def apply_configuration(*, api_client: Any, body: dict[str, Any]) -> None:
    """Create or replace the configuration."""
    await asyncio.to_thread(_apply, api_client, body)


def _delete(api_client: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        api: Any = client.AdmissionregistrationV1Api(api_client)
        api.delete_mutating_webhook_configuration(name)
        logger.info("deleted MutatingWebhookConfiguration %s", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def delete_configuration(*, api_client: Any, name: str) -> None:
    """Delete the configuration; gone already is fine."""
    await asyncio.to_thread(_delete, api_client, name)
