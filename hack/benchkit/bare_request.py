"""A bare httpx2 token request from a fresh interpreter: the baseline of the sidecar's
time to its first token.

hack/benchkit/sidecar.py runs this file by path with `python -P` (nothing prepended to
sys.path, so no module of this folder shadows another), timing process start to the
`token` line printed once the IdP has answered with an access token. It imports httpx2
and nothing of ours, so the figure is what any Python client pays.

Usage: bare_request.py TOKEN_URL CLIENT_ID CLIENT_SECRET RESOURCE
"""

from __future__ import annotations

import sys

import httpx2


def main(argv: list[str]) -> int:
    token_url, client_id, client_secret, resource = argv
    resp = httpx2.post(
        token_url,
        data={"grant_type": "client_credentials", "resource": resource, "scope": "api:read"},
        auth=(client_id, client_secret),
        trust_env=False,
    )
    resp.raise_for_status()
    if not resp.json().get("access_token"):
        print(f"no access_token in {resp.text[:200]!r}", file=sys.stderr)
        return 1
    print("token", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
