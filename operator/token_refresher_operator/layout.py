"""Where the injected sidecar keeps things in a pod: container, volume and file names.

The names are part of the contract (docs/CONTRACTS.md: an app finds its token at
TOKEN_FILE, a pod's volumes and the sidecar are found by name on reinvocation and by the
safety net), so they live in one place that the env renderer (`sidecarenv`) and the
patch (`patch`) both read.
"""

from __future__ import annotations

from token_refresher.settings import env_name
from token_refresher_operator.keys import SECRET_KEYS

__all__ = [
    "CREDENTIALS_DIR",
    "NEVER_INJECTED_NAMESPACES",
    "REPORT_TOKEN_VOLUME",
    "SA_TOKEN_SECONDS",
    "SA_TOKEN_VOLUME",
    "SECRET_VOLUMES",
    "SIDECAR_NAME",
    "SIDECAR_UID",
    "STATE_DIR",
    "STATE_FILE",
    "STATE_VOLUME",
    "TOKENS_ENV",
    "TOKEN_VOLUME",
]

SIDECAR_NAME = "token-refresher"
SIDECAR_UID = 65532  # "nonroot" in distroless images
TOKEN_VOLUME = "token-refresher-token"
STATE_VOLUME = "token-refresher-state"
SA_TOKEN_VOLUME = "token-refresher-sa-token"
REPORT_TOKEN_VOLUME = "token-refresher-report-token"
TOKENS_ENV = env_name("tokens")  # named tokens, as JSON (docs/CONTRACTS.md)
SECRET_VOLUMES = {key: f"token-refresher-{key}" for key in SECRET_KEYS}
CREDENTIALS_DIR = "/var/run/secrets/token-refresher.io"
STATE_DIR = "/var/lib/token-refresher"
# A rotated refresh token lives here, on a volume only the sidecar mounts: left at the
# sidecar's default (beside OUTPUT) the app containers could read it.
STATE_FILE = f"{STATE_DIR}/refresh-token"
SA_TOKEN_SECONDS = 3600
NEVER_INJECTED_NAMESPACES = frozenset({"kube-system"})
