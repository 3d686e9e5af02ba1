"""What one pod asks for: the default token's checked settings and its named tokens.

`annotations.parse` builds an `InjectionSpec` from a pod's annotations over the cluster
defaults; the patch reads it. It holds the values as the table (`keys.TABLE`) names them,
with typed properties only for what the patch reasons about (the grant, the client
authentication, the files), so a new annotation needs no new attribute here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from token_refresher.settings import ClientAuth, Grant
from token_refresher_operator.annotation_checks import SecretRef, secret_ref

__all__ = ["InjectionSpec", "NamedToken"]


@dataclass(frozen=True, kw_only=True)
class NamedToken:
    """A named token: its own settings, keyed by annotation without the `.<name>` suffix.

    Only what the pod (or the cluster defaults) set for this token: the rest it inherits
    from the default token in the sidecar, which applies the credentials safety rule.
    """

    name: str
    settings: Mapping[str, str]
    file: str  # its file name inside the mount: `file.<name>`, else the name

    def key(self, setting: str) -> str:
        """The annotation that sets `setting` for this token: `audience.payments`."""
        return f"{setting}.{self.name}"

    def ref(self, setting: str) -> SecretRef | None:
        value = self.settings.get(setting)
        return secret_ref(value) if value is not None else None


@dataclass(frozen=True, kw_only=True)
class InjectionSpec:
    """What one pod asks for, after merging over the defaults and checking each value.

    `values` holds the default token's setting of every key of the table that is set
    (the table's defaults filled in), the properties give the few the patch reasons
    about typed; every other value goes to the sidecar as written (`keys.TABLE`).
    """

    values: Mapping[str, str]
    containers: tuple[str, ...] | None = None  # None: every app container
    tokens: tuple[NamedToken, ...] = ()  # sorted by name

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def ref(self, key: str) -> SecretRef | None:
        """The Secret and key that a `<secret>/<key>` annotation names."""
        value = self.values.get(key)
        return secret_ref(value) if value is not None else None

    @property
    def issuer(self) -> str | None:
        return self.values.get("issuer")

    @property
    def token_url(self) -> str | None:
        return self.values.get("token-url")

    @property
    def grant(self) -> Grant:
        return Grant(self.values["grant"])

    @property
    def client_auth(self) -> ClientAuth | None:
        value = self.values.get("client-auth")
        return ClientAuth(value) if value is not None else None

    @property
    def service_account_audience(self) -> str | None:
        return self.values.get("service-account-audience")

    @property
    def file(self) -> str:
        return self.values["file"]

    @property
    def mount_path(self) -> str:
        return self.values["mount-path"]

    @property
    def token_file(self) -> str:
        return posixpath.join(self.mount_path, self.file)

    def file_of(self, token: NamedToken) -> str:
        return posixpath.join(self.mount_path, token.file)
