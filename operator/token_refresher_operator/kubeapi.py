"""The report path's calls to the kube-apiserver, in one place: TokenReview, pod, Events.

The kubernetes client is synchronous, so every call runs in a thread; it asks for the raw
JSON (`_preload_content=False`), which is what the API sent in every client version and
builds no typed model we would throw away. A failed call becomes one `KubeApiError` that
names the call, the exception class and the HTTP status, never the request: a
TokenReview's body holds the sidecar's token, and some client errors echo the request.
`kube_api_client` is the ApiClient the whole operator uses.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .checks import TokenReviewStatus
from .errors import OperatorError
from .manifests import Pod

__all__ = ["KubeApi", "KubeApiError", "kube_api_client"]


def kube_api_client() -> Any:
    """A kubernetes ApiClient: in-cluster when running in a pod, else the kubeconfig.

    Not the library's global default configuration, which other code in the process may
    change.
    """
    from kubernetes import client
    from kubernetes import config as kube_config

    loader: Any = kube_config  # untyped functions
    configuration = client.Configuration()
    try:
        loader.load_incluster_config(client_configuration=configuration)
    except loader.ConfigException:
        return loader.new_client_from_config()
    return client.ApiClient(configuration)


class KubeApiError(OperatorError):
    """A call to the kube-apiserver failed; `status` is its HTTP status, if it had one."""

    def __init__(self, call: str, exc: Exception) -> None:
        self.status: int | None = getattr(exc, "status", None)
        self.cause = type(exc).__name__
        detail = f" (HTTP {self.status})" if self.status else ""
        super().__init__([f"{call} failed: {self.cause}{detail}"])


class KubeApi:
    """The four calls of the report path, async.

    `core` and `authentication` are the client library's CoreV1Api and
    AuthenticationV1Api; tests replace them to inject what a real apiserver will not do
    on demand (a 500, a timeout).
    """

    def __init__(self, api_client: Any, *, timeout: float = 10.0) -> None:
        from kubernetes import client

        self.core: Any = client.CoreV1Api(api_client)
        self.authentication: Any = client.AuthenticationV1Api(api_client)
        self._timeout = timeout

    async def review_token(self, token: str, *, audience: str) -> TokenReviewStatus:
        """The `status` of a TokenReview of `token` for `audience`."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        try:
            raw = await asyncio.to_thread(self._create_token_review, body)
        except Exception as exc:
            raise KubeApiError("TokenReview", exc) from None  # the cause may quote the token
        result = raw.get("status") if isinstance(raw, dict) else None
        return result if isinstance(result, dict) else {}  # type: ignore[return-value]

    async def read_pod(self, namespace: str, name: str) -> Pod | None:
        """The pod, or None when it does not exist."""
        try:
            raw = await asyncio.to_thread(self._read_pod, namespace, name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise KubeApiError("reading the pod", exc) from exc
        return raw if isinstance(raw, dict) else None  # type: ignore[return-value]

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._create_event, namespace, body)
        except Exception as exc:
            raise KubeApiError("creating the Event", exc) from exc

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Apply a JSON merge patch to an Event."""
        try:
            await asyncio.to_thread(self._patch_event, namespace, name, patch)
        except Exception as exc:
            raise KubeApiError("updating the Event", exc) from exc

    def _create_token_review(self, body: dict[str, Any]) -> Any:
        resp = self.authentication.create_token_review(
            body, _preload_content=False, _request_timeout=self._timeout
        )
        return json.loads(resp.data)

    def _read_pod(self, namespace: str, name: str) -> Any:
        resp = self.core.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=self._timeout
        )
        return json.loads(resp.data)

    def _create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.core.create_namespaced_event(
            namespace, body, _preload_content=False, _request_timeout=self._timeout
        )

    def _patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.core.patch_namespaced_event(
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=self._timeout,
        )
