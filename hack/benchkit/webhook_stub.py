"""A stand-in for the operator's webhook, to tell the apiserver's share of the admission
cost from the operator's.

Modes: `allow` answers every review allowed and unchanged; `label` adds one label;
`operator-patch` returns the operator's own patch (`build_patch`, the pure core of
/mutate) from a bare aiohttp handler, without kopf around it. hack/benchkit/stubs.py runs
this file by path with `python -P`, one process per mode, and registers it like the
operator's webhook.

Usage: webhook_stub.py PORT CERT_FILE KEY_FILE MODE CONFIG_FILE
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

LABEL = [{"op": "add", "path": "/metadata/labels", "value": {"bench": "patched"}}]


def app(mode: str, config_file: Path) -> web.Application:
    if mode == "operator-patch":
        from token_refresher_operator.config import load_cluster_config
        from token_refresher_operator.patch import build_patch

        config = load_cluster_config(config_file)

    async def mutate(request: web.Request) -> web.Response:
        req = (await request.json())["request"]
        pod = req["object"]
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        ops: list[Any] = []
        if mode == "label" and "labels" not in pod["metadata"]:
            ops = LABEL
        elif mode == "operator-patch" and not any(
            c.get("name") == "token-refresher" for c in pod["spec"].get("initContainers") or []
        ):
            ops = list(
                build_patch(
                    pod=pod,
                    namespace=req["namespace"],
                    config=config,
                    operator_namespace="token-refresher",
                    report_audience="token-refresher-report",
                )
            )
        if ops:
            patch = base64.b64encode(json.dumps(ops).encode()).decode()
            response.update(patchType="JSONPatch", patch=patch)
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    application = web.Application()
    application.router.add_post("/mutate", mutate)
    return application


def main(argv: list[str]) -> None:
    port, cert, key, mode, config_file = argv
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    web.run_app(
        app(mode, Path(config_file)),
        host="127.0.0.1",
        port=int(port),
        ssl_context=context,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
