"""Injection end to end: kubectl -> the real kube-apiserver -> the operator's webhook.

Each test writes pods with kubectl and reads back what the apiserver stored. There is no
controller-manager or kubelet, so pods stay Pending; admission is all that is tested.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.controlplane import ControlPlane
from tests.support.operator import DEV_CONFIGURATION, SIDECAR_IMAGE, OperatorProcess
from token_refresher.settings import Settings

pytestmark = [pytest.mark.cluster]

P = "token-refresher.io/"
ANNOTATIONS = {
    P + "inject": "true",
    P + "issuer": "https://idp.example/realms/prod",
    P + "client-id": "billing",
    P + "client-secret": "billing-oauth/secret",
    P + "scope": "invoices.read",
}
RESTRICTED_CONTAINER = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}


def manifest(
    name: str,
    namespace: str,
    annotations: dict[str, str] | None = None,
    *,
    containers: tuple[str, ...] = ("app",),
    restricted: bool = False,
) -> str:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": c,
                    "image": "registry.test/app:1",
                    **(RESTRICTED_CONTAINER if restricted else {}),
                }
                for c in containers
            ]
        },
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    return json.dumps(pod)


def get_pod(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout
    )
    return pod


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def test_annotated_pod_is_stored_with_the_sidecar(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=manifest("app", namespace, ANNOTATIONS, containers=("app", "worker")),
    )
    pod = get_pod(cluster, namespace, "app")
    spec = pod["spec"]

    assert pod["metadata"]["annotations"][P + "injected"] == "true"
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == "token-refresher"]
    assert spec["initContainers"][0] is sidecar
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["restartPolicy"] == "Always"
    assert "args" not in sidecar
    assert "command" not in sidecar
    env = {v["name"]: v.get("value", v.get("valueFrom")) for v in sidecar["env"]}
    assert env == {
        "TOKEN_REFRESHER_ISSUER": "https://idp.example/realms/prod",
        "TOKEN_REFRESHER_GRANT": "client_credentials",
        "TOKEN_REFRESHER_CLIENT_ID": "billing",
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE": (
            "/var/run/secrets/token-refresher.io/client-secret/client-secret"
        ),
        "TOKEN_REFRESHER_SCOPE": "invoices.read",
        "TOKEN_REFRESHER_OUTPUT": "/var/run/secrets/token-refresher/token",
        "TOKEN_REFRESHER_FORMAT": "raw",
        "TOKEN_REFRESHER_STATE_FILE": "/var/lib/token-refresher/refresh-token",
        "TOKEN_REFRESHER_LISTEN": "0.0.0.0:8099",
        "TOKEN_REFRESHER_POD_NAME": {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        },
        "TOKEN_REFRESHER_POD_NAMESPACE": {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
        },
        "TOKEN_REFRESHER_POD_UID": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}},
        # DEV mode: sidecars report to the operator process itself, trusting its cert.
        "TOKEN_REFRESHER_REPORT_URL": f"https://127.0.0.1:{operator.report_port}/report",
        "TOKEN_REFRESHER_REPORT_CA": env["TOKEN_REFRESHER_REPORT_CA"],
        "TOKEN_REFRESHER_REPORT_TOKEN_FILE": "/var/run/secrets/token-refresher.io/report/token",
        "TOKEN_REFRESHER_REPORT_AUDIENCE": "token-refresher-report",
    }
    assert env["TOKEN_REFRESHER_REPORT_CA"].startswith("-----BEGIN CERTIFICATE-----")
    assert sidecar["startupProbe"] == {
        "httpGet": {"path": "/readyz?wait=4", "port": 8099, "scheme": "HTTP"},
        "periodSeconds": 1,
        "failureThreshold": 15,
        "timeoutSeconds": 5,
        "successThreshold": 1,
    }
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["resources"] == {
        "requests": {"cpu": "5m", "memory": "32Mi"},
        "limits": {"memory": "64Mi"},
    }
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sidecar_mounts = by_name(sidecar["volumeMounts"])
    assert (
        sidecar_mounts["token-refresher-token"]["mountPath"] == "/var/run/secrets/token-refresher"
    )
    assert sidecar_mounts["token-refresher-state"]["mountPath"] == "/var/lib/token-refresher"
    assert sidecar_mounts["token-refresher-client-secret"]["readOnly"] is True
    assert sidecar_mounts["token-refresher-report-token"]["readOnly"] is True

    volumes = by_name(spec["volumes"])
    assert volumes["token-refresher-token"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert volumes["token-refresher-state"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert volumes["token-refresher-client-secret"]["secret"] == {
        "secretName": "billing-oauth",
        "items": [{"key": "secret", "path": "client-secret"}],
        "defaultMode": 0o444,
    }
    report_source = volumes["token-refresher-report-token"]["projected"]["sources"][0]
    assert report_source["serviceAccountToken"] == {
        "audience": "token-refresher-report",
        "expirationSeconds": 3600,
        "path": "token",
    }

    for app in spec["containers"]:
        ours = [m for m in app["volumeMounts"] if m["name"].startswith("token-refresher")]
        assert ours == [
            {
                "name": "token-refresher-token",
                "mountPath": "/var/run/secrets/token-refresher",
                "readOnly": True,
            }
        ]
        assert {"name": "TOKEN_FILE", "value": "/var/run/secrets/token-refresher/token"} in app[
            "env"
        ]


def test_plain_pods_never_reach_the_webhook(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=manifest("plain", namespace))
    cluster.kubectl("apply", "-f", "-", input=manifest("off", namespace, {P + "inject": "false"}))
    # An annotated pod afterwards: once its call is logged, any call for the two pods
    # before it would be logged too (admission is synchronous with the create).
    cluster.kubectl("apply", "-f", "-", input=manifest("marker", namespace, ANNOTATIONS))
    operator.wait_for(
        "the marker pod's admission call", lambda: operator.calls_for(namespace, "marker")
    )

    assert operator.calls_for(namespace, "plain") == []
    assert operator.calls_for(namespace, "off") == []
    for name in ("plain", "off"):
        pod = get_pod(cluster, namespace, name)
        assert "initContainers" not in pod["spec"]
        assert not [v for v in pod["spec"]["volumes"] if v["name"].startswith("token-refresher")]
        assert P + "injected" not in pod["metadata"].get("annotations", {})


def test_the_operator_namespace_never_reaches_the_webhook(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    name = f"self-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("-n", operator.namespace, "create", "serviceaccount", "default", check=False)
    cluster.kubectl("apply", "-f", "-", input=manifest(name, operator.namespace, ANNOTATIONS))
    assert "initContainers" not in get_pod(cluster, operator.namespace, name)["spec"]
    assert operator.calls_for(operator.namespace, name) == []


def test_bad_annotation_is_denied_with_the_message(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    bad = {**ANNOTATIONS, P + "grant": "foo", P + "refresh-ratio": "2"}
    proc = cluster.kubectl("apply", "-f", "-", input=manifest("bad", namespace, bad), check=False)
    assert proc.returncode != 0
    assert (
        'admission webhook "inject.token-refresher.io" denied the request: '
        "token-refresher.io/grant: must be one of client_credentials, refresh_token, "
        "token_exchange, jwt_bearer (got 'foo'); token-refresher.io/refresh-ratio: must be a "
        "number between 0 and 1, both excluded, such as 0.7 (got '2')"
    ) in proc.stderr
    missing = cluster.kubectl("-n", namespace, "get", "pod", "bad", check=False)
    assert "NotFound" in missing.stderr


def test_a_bad_annotation_is_one_warning_naming_the_pod_not_an_operator_error(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    bad = {**ANNOTATIONS, P + "grant": "client_credential"}
    proc = cluster.kubectl("apply", "-f", "-", input=manifest("typo", namespace, bad), check=False)
    assert "denied the request" in proc.stderr
    wanted = f"pod {namespace}/typo denied: {P}grant: must be one of"
    lines = operator.wait_for(
        "the denial in the log",
        lambda: [line for line in operator.log().splitlines() if wanted in line],
    )
    assert len(lines) == 1
    assert "WARNING" in lines[0]
    assert "failed permanently" not in operator.log()
    assert not [line for line in operator.log().splitlines() if "ERROR" in line]


def test_restricted_namespace_admits_the_injected_pod(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    # The control: Pod Security really is enforced here.
    rejected = cluster.kubectl("apply", "-f", "-", input=manifest("loose", namespace), check=False)
    assert "violates PodSecurity" in rejected.stderr

    cluster.kubectl(
        "apply", "-f", "-", input=manifest("strict", namespace, ANNOTATIONS, restricted=True)
    )
    pod = get_pod(cluster, namespace, "strict")
    assert pod["spec"]["initContainers"][0]["name"] == "token-refresher"


def test_an_annotated_pod_reaches_the_webhook_once(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    # reinvocationPolicy Never: the ServiceAccount plugin's mount into the sidecar after
    # our patch no longer makes the apiserver call a second time (README).
    cluster.kubectl("apply", "-f", "-", input=manifest("once", namespace, ANNOTATIONS))
    assert "kube-api-access" in str(get_pod(cluster, namespace, "once")["spec"]["initContainers"])
    assert len(operator.calls_for(namespace, "once")) == 1


def test_applying_twice_injects_once(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    text = manifest("twice", namespace, ANNOTATIONS)
    cluster.kubectl("apply", "-f", "-", input=text)
    second = cluster.kubectl("apply", "-f", "-", input=text)
    assert "pod/twice unchanged" in second.stdout
    pod = get_pod(cluster, namespace, "twice")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["token-refresher"]
    names = [v["name"] for v in pod["spec"]["volumes"]]
    assert names.count("token-refresher-token") == 1
    app_env = [v["name"] for v in pod["spec"]["containers"][0]["env"]]
    assert app_env.count("TOKEN_FILE") == 1


def test_server_side_dry_run_shows_the_injection(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    proc = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=manifest("dry", namespace, ANNOTATIONS),
    )
    pod = json.loads(proc.stdout)
    assert pod["spec"]["initContainers"][0]["name"] == "token-refresher"
    assert pod["metadata"]["annotations"][P + "injected"] == "true"
    assert any(c.dry_run for c in operator.calls_for(namespace, "dry"))
    missing = cluster.kubectl("-n", namespace, "get", "pod", "dry", check=False)
    assert "NotFound" in missing.stderr


def _events(cluster: ControlPlane, namespace: str, pod: str) -> list[dict[str, Any]]:
    items = json.loads(
        cluster.kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={pod}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return [e for e in items if e.get("reason") == "SidecarNotInjected"]


def test_pod_admitted_without_the_webhook_gets_a_warning_event(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    saved = operator.webhook_configuration()
    assert saved is not None
    cluster.kubectl("delete", "mutatingwebhookconfiguration", DEV_CONFIGURATION)
    try:
        cluster.kubectl("apply", "-f", "-", input=manifest("slipped", namespace, ANNOTATIONS))
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            saved["metadata"].pop(key, None)
        cluster.kubectl("create", "-f", "-", input=json.dumps(saved))
    assert "initContainers" not in get_pod(cluster, namespace, "slipped")["spec"]

    [event] = operator.wait_for(
        "the SidecarNotInjected event", lambda: _events(cluster, namespace, "slipped")
    )
    assert event["type"] == "Warning"
    assert event["source"]["component"] == "token-refresher"
    assert "runs without the token-refresher sidecar, so it gets no token" in event["message"]
    # Once per pod, however often the operator sees it again.
    cluster.kubectl("-n", namespace, "annotate", "pod", "slipped", "touched=1")
    time.sleep(2)
    assert len(_events(cluster, namespace, "slipped")) == 1
    assert event.get("count", 1) == 1


def test_an_annotated_pod_in_kube_system_is_told_that_the_namespace_is_excluded(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    """kube-system never reaches the webhook; the pod still asked for a token (README)."""
    name = f"system-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("-n", "kube-system", "create", "serviceaccount", "default", check=False)
    cluster.kubectl("apply", "-f", "-", input=manifest(name, "kube-system", ANNOTATIONS))
    try:
        assert "initContainers" not in get_pod(cluster, "kube-system", name)["spec"]
        [event] = operator.wait_for(
            "the SidecarNotInjected event", lambda: _events(cluster, "kube-system", name)
        )
        assert event["type"] == "Warning"
        assert "namespace kube-system is excluded from injection" in event["message"]
        assert "recreating the pod will not help" in event["message"]
        assert operator.calls_for("kube-system", name) == []
    finally:
        cluster.kubectl("-n", "kube-system", "delete", "pod", name, "--wait=false")


def test_rendered_env_builds_the_sidecar_settings(
    cluster: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    annotations = {
        **ANNOTATIONS,
        P + "grant": "token_exchange",
        P + "service-account-audience": "api://exchange",
        P + "format": "json",
        P + "refresh-ratio": "0.5",
    }
    cluster.kubectl("apply", "-f", "-", input=manifest("contract", namespace, annotations))
    pod = get_pod(cluster, namespace, "contract")
    [sidecar] = [c for c in pod["spec"]["initContainers"] if c["name"] == "token-refresher"]
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
    }
    env = {
        var["name"]: var["value"]
        if "value" in var
        else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        for var in sidecar["env"]
    }
    settings = Settings.from_env(env)
    assert settings.grant.value == "token_exchange"
    assert settings.format == "json"
    assert settings.refresh_ratio == 0.5
    assert settings.pod_uid == pod["metadata"]["uid"]
    assert str(settings.service_account_token_file) == (
        "/var/run/secrets/token-refresher.io/serviceaccount/token"
    )
    app_env = {v["name"]: v.get("value") for v in pod["spec"]["containers"][0]["env"]}
    assert str(settings.output) == app_env["TOKEN_FILE"]
    # Whatever the app can see, the state (a rotated refresh token) is not in it.
    app_dirs = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert not any(str(settings.effective_state_file).startswith(d + "/") for d in app_dirs)
    sa_volume = by_name(pod["spec"]["volumes"])["token-refresher-sa-token"]
    assert (
        sa_volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "api://exchange"
    )
