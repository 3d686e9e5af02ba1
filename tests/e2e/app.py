"""The app of the end-to-end pods: it reads its token files in a loop and asks each
token's IdP (RFC 7662 introspection) whether the token is active, printing one JSON line
per check for the tests to judge (workloads.bad_calls). It runs in the app container with
the image's Python and the standard library only, started as `python -c <this file>`.

CHECKS (JSON) lists [token name, env var naming its file, introspection URL,
client:secret]; without it, the default token: TOKEN_FILE at INTROSPECTION_URL with
RS_CREDENTIALS. ONCE=1 checks once and exits 0 only if every token was active.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import os
import sys
import time
import urllib.request
from typing import Any


def check(name: str, file_env: str, url: str, credentials: str) -> dict[str, Any]:
    line: dict[str, Any] = {"t": round(time.time(), 1), "token": name}
    try:
        with open(os.environ[file_env]) as file:
            doc = json.loads(file.read())
        token = doc["access_token"]
        expires = calendar.timegm(time.strptime(doc["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        line["left"] = round(expires - time.time(), 1)
        line["sha"] = hashlib.sha256(token.encode()).hexdigest()[:12]
    except Exception as exc:  # any failure to read the token is what the test looks for
        line["error"] = type(exc).__name__
        return line
    auth = base64.b64encode(credentials.encode()).decode()
    body = ("token=" + token).encode()
    req = urllib.request.Request(url, data=body, headers={"Authorization": "Basic " + auth})
    # The IdP runs on the host beside the whole suite: on a loaded machine it may miss a
    # call. Failing to ask is not a bad token, so it is retried, then noted apart.
    for _ in range(3):
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                answer = json.load(resp)
            line["active"] = answer.get("active", False)
            line["aud"] = answer.get("aud")
            line.pop("unreachable", None)
            break
        except Exception as exc:
            line["unreachable"] = type(exc).__name__
            time.sleep(0.5)
    return line


def main() -> None:
    checks = json.loads(os.environ.get("CHECKS") or "null") or [
        ["default", "TOKEN_FILE", os.environ["INTROSPECTION_URL"], os.environ["RS_CREDENTIALS"]]
    ]
    while True:
        lines = [check(*c) for c in checks]
        for line in lines:
            print(json.dumps(line), flush=True)
        if os.environ.get("ONCE"):
            sys.exit(0 if all(line.get("active") for line in lines) else 1)
        time.sleep(1)


if __name__ == "__main__":
    main()
