"""Just enough of the Kubernetes API for one Secret: get it, patch it, watch it.

A token family lives in one Secret of the pod's namespace (`family`). The sidecar
image carries no Kubernetes client library (the official one adds 128 MB), and three
calls do not need one: this module speaks them over httpx2 with the pod's
service-account token, re-read on every request because the kubelet rotates it.

Every patch carries the resourceVersion the caller read, which the apiserver treats as
a precondition: a patch based on an outdated read fails with 409 Conflict instead of
overwriting someone else's write (optimistic concurrency). The watch is a single
long poll on that one object (`fieldSelector=metadata.name=...`), so RBAC can name the
Secret with `resourceNames` for get, watch and patch alike, and no list of the
namespace's Secrets is ever needed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx2

from .credentials import CredentialFile, ssl_context
from .errors import CoordinationError, CredentialError

__all__ = ["Conflict", "KubeClient", "in_cluster_url", "required_rbac"]

MERGE_PATCH = "application/merge-patch+json"
_MAX_BODY = 1024 * 1024  # a Secret is at most 1 MiB


def in_cluster_url() -> str | None:
    """The kube-apiserver as the kubelet tells every pod: KUBERNETES_SERVICE_HOST/PORT."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def required_rbac(namespace: str, name: str) -> str:
    """The grant a missing permission message asks for, in words."""
    return (
        f'verbs get, watch and patch on secrets with resourceNames ["{name}"] in namespace '
        f"{namespace} (a Role bound to the pod's service account)"
    )


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read it again and decide again."""


class KubeClient:
    """Get, patch and watch Secrets of one namespace with the pod's service-account token.

    `on_request(verb, status)` is told of every request (status 0 when none came back):
    the metrics count them, so the cost of coordination per refresh is visible.
    """

    def __init__(
        self,
        *,
        api_url: str | None,
        namespace: str | None,
        token_file: Path,
        ca_file: Path | None,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        on_request: Callable[[str, int], None] | None = None,
    ) -> None:
        self.api_url = (api_url or "").rstrip("/")
        self.namespace = namespace or ""
        self._token = CredentialFile(token_file, what="service-account token", always=True)
        self._timeout = timeout
        self._on_request = on_request
        # A missing CA (automountServiceAccountToken: false) must not stop the daemon at
        # start — that would be a crash loop — but fail every request, saying why.
        self._ca_problem: str | None = None
        verify: Any = True
        if ca_file is not None:
            try:
                verify = ssl_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                self._ca_problem = (
                    f"cannot read the kube-apiserver's CA bundle {ca_file}: "
                    f"{getattr(exc, 'strerror', None) or exc} (is the service-account token "
                    "mounted into the sidecar? automountServiceAccountToken must not be false)"
                )
        self._client = httpx2.AsyncClient(
            transport=transport,
            verify=verify,
            timeout=timeout,
            headers={"User-Agent": "token-refresher", "Accept": "application/json"},
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, name: str | None = None) -> str:
        base = f"{self.api_url}/api/v1/namespaces/{quote(self.namespace)}/secrets"
        return f"{base}/{quote(name)}" if name else base

    def _where(self, name: str) -> str:
        return f"secret {self.namespace}/{name}"

    async def get_secret(self, name: str) -> dict[str, Any]:
        return await self._call("get", name, "GET", self._url(name))

    async def patch_secret(
        self, name: str, *, resource_version: str, data: dict[str, str | None]
    ) -> dict[str, Any]:
        """Merge-patch `data` keys (None deletes one) if the Secret is still at
        `resource_version`; raises Conflict when it is not."""
        body = {"metadata": {"resourceVersion": resource_version}, "data": data}
        return await self._call(
            "patch",
            name,
            "PATCH",
            self._url(name),
            content=json.dumps(body).encode(),
            headers={"Content-Type": MERGE_PATCH},
        )

    async def watch_secret(
        self, name: str, *, resource_version: str, seconds: float
    ) -> dict[str, Any] | None:
        """The Secret after its next change past `resource_version`, or None when nothing
        changed within `seconds` (or the watch must restart from a fresh read)."""
        whole = max(1, math.ceil(seconds))
        params = {
            "fieldSelector": f"metadata.name={name}",
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(whole),
            "allowWatchBookmarks": "false",
        }
        headers = self._auth()
        try:
            # The apiserver counts timeoutSeconds in whole seconds; the caller's deadline
            # (a claim running out, a token expiring) is kept to the millisecond here.
            async with asyncio.timeout(seconds):
                return await self._watch(name, params, headers, whole)
        except TimeoutError:
            return None

    async def _watch(
        self, name: str, params: dict[str, str], headers: dict[str, str], whole: int
    ) -> dict[str, Any] | None:
        url = self._url()
        try:
            async with self._client.stream(
                "GET", url, params=params, headers=headers, timeout=whole + self._timeout
            ) as resp:
                self._count("watch", resp.status_code)
                if resp.status_code != 200:
                    body = await resp.aread()
                    self._raise("watch", name, resp.status_code, body[:_MAX_BODY])
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED"):
                        return dict(event["object"])
                    if kind == "DELETED":
                        raise CoordinationError(
                            f"{self._where(name)} was deleted", error="not_found", permanent=True
                        )
                    return None  # ERROR (410 Gone: too old): read again
        except (httpx2.HTTPError, ValueError) as exc:
            self._count("watch", 0)
            raise self._unavailable("watch", name, exc) from exc
        return None

    def _auth(self) -> dict[str, str]:
        if not self.api_url:
            raise CoordinationError(
                "no kube-apiserver to reach: KUBERNETES_SERVICE_HOST is not set and neither "
                "is TOKEN_REFRESHER_KUBERNETES_API",
                error="config_error",
                permanent=True,
            )
        if self._ca_problem is not None:
            raise CoordinationError(self._ca_problem, error="config_error", permanent=True)
        if not self.namespace:
            raise CoordinationError(
                "the pod's namespace is unknown: set TOKEN_REFRESHER_POD_NAMESPACE (the "
                "operator does) or mount the service-account namespace file",
                error="config_error",
                permanent=True,
            )
        try:
            token = self._token.read()
        except CredentialError as exc:
            raise CoordinationError(
                f"cannot talk to the kube-apiserver: {exc} (is the service-account token "
                "mounted into the sidecar? automountServiceAccountToken must not be false)",
                error="credential_unreadable",
            ) from exc
        return {"Authorization": f"Bearer {token}"}

    async def _call(
        self, verb: str, name: str, method: str, url: str, **kwargs: Any
    ) -> dict[str, Any]:
        headers = {**kwargs.pop("headers", {}), **self._auth()}
        try:
            resp = await self._client.request(method, url, headers=headers, **kwargs)
        except httpx2.HTTPError as exc:
            self._count(verb, 0)
            raise self._unavailable(verb, name, exc) from exc
        self._count(verb, resp.status_code)
        if resp.status_code == 200:
            try:
                return dict(resp.json())
            except ValueError as exc:
                raise self._unavailable(verb, name, exc) from exc
        self._raise(verb, name, resp.status_code, resp.content[:_MAX_BODY])

    def _count(self, verb: str, status: int) -> None:
        if self._on_request is not None:
            self._on_request(verb, status)

    def _unavailable(self, verb: str, name: str, exc: Exception) -> CoordinationError:
        return CoordinationError(
            f"cannot {verb} {self._where(name)}: the kube-apiserver at {self.api_url} "
            f"did not answer ({type(exc).__name__}: {exc})",
            error="apiserver_unavailable",
        )

    def _raise(self, verb: str, name: str, status: int, body: bytes) -> NoReturn:
        try:
            message = str(json.loads(body).get("message", ""))[:500]
        except (ValueError, AttributeError):
            message = ""
        where = self._where(name)
        if status == 409:
            raise Conflict(f"{where} changed since it was read")
        if status == 403:
            raise CoordinationError(
                f"the kube-apiserver refused to let this pod {verb} {where}: {message}; "
                f"grant {required_rbac(self.namespace, name)}",
                error="forbidden",
                description=f"missing permission: {verb} secrets/{name} in {self.namespace}",
                status=status,
                permanent=True,
            )
        if status == 404:
            raise CoordinationError(
                f"{where} does not exist; create it (it may hold just the bootstrap refresh "
                "token) before the pods that share it",
                error="not_found",
                status=status,
                permanent=True,
            )
        if status == 401:
            raise CoordinationError(
                f"the kube-apiserver did not accept this pod's service-account token ({verb} "
                f"{where}): {message}",
                error="unauthorized",
                status=status,
            )
        raise CoordinationError(
            f"cannot {verb} {where}: the kube-apiserver answered HTTP {status}: {message}",
            error="apiserver_unavailable" if status >= 500 or status == 429 else f"http_{status}",
            status=status,
        )
