"""What the demo shows from inside the app container (`kubectl exec ... python -c`): a
fingerprint of the token the app reads, whether the IdP says it is active, and what the
sidecar's /status says about it. Standard library only: it runs with the image's Python.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request


def main() -> None:
    with open(os.environ["TOKEN_FILE"]) as file:
        token = json.load(file)["access_token"]  # the demo's pods use format json
    auth = base64.b64encode(os.environ["RS_CREDENTIALS"].encode()).decode()
    # The URL is the demo IdP's, set by the demo itself: http on the node's bridge.
    req = urllib.request.Request(  # noqa: S310
        os.environ["INTROSPECTION_URL"],
        data=("token=" + token).encode(),
        headers={"Authorization": "Basic " + auth},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        active = json.load(resp).get("active")
    with urllib.request.urlopen("http://127.0.0.1:8099/status", timeout=5) as resp:
        status = json.load(resp)
    shown = {
        "sha": hashlib.sha256(token.encode()).hexdigest()[:10],
        "active": active,
        "expires_at": status.get("expires_at"),
        "state": status.get("state"),
        "refreshes": status.get("refresh_count"),
        "failures": status.get("consecutive_failures"),
    }
    print(json.dumps(shown))


if __name__ == "__main__":
    main()
