"""Named tokens through the real kube-apiserver and the operator's webhook (DEV mode): the
stored pod of the README's worked example, what its sidecar makes of its env, and a bad
named annotation denied by its full key, with Pod Security "restricted" enforced."""

from __future__ import annotations

from typing import Any

import pytest

from tests.controlplane import ControlPlane
from tests.operator.test_injection import ANNOTATIONS, P, by_name, get_pod, manifest
from tests.support.operator import OperatorProcess
from token_refresher.settings import Settings

pytestmark = [pytest.mark.cluster]

IDP2 = "https://login.partner.example"
# The README's example: invoices (the default token) and payments at one IdP, the
# partner's API at another with its own client and secret.
BILLING = {
    **ANNOTATIONS,
    P + "audience": "invoices-api",
    P + "audience.payments": "payments-api",
    P + "issuer.partner": IDP2,
    P + "client-id.partner": "billing-at-partner",
    P + "client-secret.partner": "partner-oauth/secret",
}
MOUNT = "/var/run/secrets/token-refresher"


def sidecar_settings(pod: dict[str, Any]) -> dict[str, Settings]:
    [sidecar] = [c for c in pod["spec"]["initContainers"] if c["name"] == "token-refresher"]
    fields = {f"metadata.{k}": pod["metadata"][k] for k in ("name", "namespace", "uid")}
    env = {
        var["name"]: var["value"]
        if "value" in var
        else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        for var in sidecar["env"]
    }
    return Settings.from_env(env).all_tokens()


def test_a_pod_with_three_tokens_is_stored_with_one_sidecar_serving_them(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.kubectl(
        "apply", "-f", "-",
        input=manifest("billing", namespace, BILLING, containers=("app", "worker"),
                       restricted=True),
    )  # fmt: skip
    pod = get_pod(cluster, namespace, "billing")
    tokens = sidecar_settings(pod)
    assert {name: str(t.output) for name, t in tokens.items()} == {
        "default": f"{MOUNT}/token",
        "partner": f"{MOUNT}/partner",
        "payments": f"{MOUNT}/payments",
    }
    assert tokens["payments"].audience == "payments-api"
    assert tokens["payments"].client_id == "billing"  # inherited: the same IdP
    assert tokens["partner"].client_id == "billing-at-partner"
    partner_secret = str(tokens["partner"].client_secret_file)
    assert partner_secret != str(tokens["default"].client_secret_file)

    spec = pod["spec"]
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == "token-refresher"]
    mounts = by_name(sidecar["volumeMounts"])
    [partner_mount] = [
        m for m in mounts.values() if partner_secret.startswith(m["mountPath"] + "/")
    ]
    volume = by_name(spec["volumes"])[partner_mount["name"]]
    assert volume["secret"]["secretName"] == "partner-oauth"
    for app in spec["containers"]:
        # The apps see the token files, never a Secret.
        assert [m["name"] for m in app["volumeMounts"] if "token-refresher" in m["name"]] == [
            "token-refresher-token"
        ]
        env = {v["name"]: v["value"] for v in app["env"]}
        assert env == {
            "TOKEN_FILE": f"{MOUNT}/token",
            "TOKEN_FILE_PARTNER": f"{MOUNT}/partner",
            "TOKEN_FILE_PAYMENTS": f"{MOUNT}/payments",
        }


def test_a_bad_token_name_is_denied_by_its_full_key(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    bad = {**ANNOTATIONS, P + "audience.Pay_ments": "payments-api"}
    proc = cluster.kubectl("apply", "-f", "-", input=manifest("bad", namespace, bad), check=False)
    assert proc.returncode != 0
    assert (
        "denied the request: token-refresher.io/audience.Pay_ments: the token name after "
        "'audience.' must be a DNS label"
    ) in proc.stderr


def test_another_idp_without_its_own_client_is_denied_naming_what_it_lacks(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    bad = {**ANNOTATIONS, P + "issuer.partner": IDP2}
    proc = cluster.kubectl("apply", "-f", "-", input=manifest("lone", namespace, bad), check=False)
    assert "denied the request: token-refresher.io/client-id.partner: required" in proc.stderr
    assert "does not inherit the default's credentials" in proc.stderr
