"""The pure annotation -> JSON Patch translation, table by table, without any I/O.

Patches are applied with the `jsonpatch` library (independent of the code under test),
so every test also proves the operations are valid RFC 6902 against the pod they target.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from token_refresher.settings import Settings
from token_refresher_operator.config import ClusterConfig
from token_refresher_operator.errors import AnnotationError
from token_refresher_operator.patch import build_patch, check_env, skip_reason

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CONFIG = ClusterConfig.model_validate(
    {
        "sidecar": {
            "image": "registry.example/token-refresher:1.2.3",
            "imagePullPolicy": "IfNotPresent",
            "resources": {
                "requests": {"cpu": "5m", "memory": "32Mi"},
                "limits": {"memory": "64Mi"},
            },
            "volumeSizeLimit": "1Mi",
            "port": 8099,
        },
        "report": {"url": "https://token-refresher.token-refresher.svc/report", "caBundle": PEM},
    }
)
NO_REPORT = ClusterConfig.model_validate({"sidecar": {"image": "registry.example/tr:1"}})
OPERATOR_NS = "token-refresher"
AUD = "token-refresher-report"
P = "token-refresher.io/"
BASE = {
    P + "inject": "true",
    P + "issuer": "https://idp.example/realms/prod",
    P + "client-id": "billing",
    P + "client-secret": "billing-oauth/secret",
}


def make_pod(
    annotations: dict[str, str] | None = None,
    *,
    containers: tuple[str, ...] = ("app",),
    init: tuple[str, ...] = (),
    **spec: Any,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "apps"},
        "spec": {"containers": [{"name": n, "image": "app:1"} for n in containers], **spec},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = dict(annotations)
    if init:
        pod["spec"]["initContainers"] = [{"name": n, "image": "init:1"} for n in init]
    return pod


def ops_for(
    pod: dict[str, Any], *, namespace: str = "apps", config: ClusterConfig = CONFIG
) -> list[Any]:
    return list(
        build_patch(
            pod=pod,
            namespace=namespace,
            config=config,
            operator_namespace=OPERATOR_NS,
            report_audience=AUD,
        )
    )


def injected(pod: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    ops = ops_for(pod, **kwargs)
    assert ops, "expected an injection"
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    return result


def sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = pod["spec"]["initContainers"][0]
    assert first["name"] == "token-refresher"
    return first


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container.get("env", [])}


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"].get("volumes", [])}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def denial(annotations: dict[str, str], **kwargs: Any) -> list[str]:
    with pytest.raises(AnnotationError) as info:
        ops_for(make_pod(annotations, **kwargs))
    return info.value.lines


# --- the injected sidecar ---------------------------------------------------------------


def test_client_credentials_pod_gets_the_whole_sidecar() -> None:
    pod = injected(make_pod(BASE))
    side = sidecar(pod)
    assert side["image"] == "registry.example/token-refresher:1.2.3"
    assert side["imagePullPolicy"] == "IfNotPresent"
    assert side["restartPolicy"] == "Always"
    assert "args" not in side
    assert "command" not in side
    assert env(side) == {
        "TOKEN_REFRESHER_ISSUER": "https://idp.example/realms/prod",
        "TOKEN_REFRESHER_GRANT": "client_credentials",
        "TOKEN_REFRESHER_CLIENT_ID": "billing",
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE": (
            "/var/run/secrets/token-refresher.io/client-secret/client-secret"
        ),
        "TOKEN_REFRESHER_OUTPUT": "/var/run/secrets/token-refresher/token",
        "TOKEN_REFRESHER_FORMAT": "raw",
        "TOKEN_REFRESHER_STATE_FILE": "/var/lib/token-refresher/refresh-token",
        "TOKEN_REFRESHER_LISTEN": "0.0.0.0:8099",
        "TOKEN_REFRESHER_POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "TOKEN_REFRESHER_POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "TOKEN_REFRESHER_POD_UID": {"fieldRef": {"fieldPath": "metadata.uid"}},
        "TOKEN_REFRESHER_REPORT_URL": "https://token-refresher.token-refresher.svc/report",
        "TOKEN_REFRESHER_REPORT_CA": PEM,
        "TOKEN_REFRESHER_REPORT_TOKEN_FILE": "/var/run/secrets/token-refresher.io/report/token",
        "TOKEN_REFRESHER_REPORT_AUDIENCE": AUD,
    }
    assert side["startupProbe"] == {
        "httpGet": {"path": "/readyz?wait=4", "port": 8099},
        "periodSeconds": 1,
        "failureThreshold": 15,
        "timeoutSeconds": 5,
    }
    assert side["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8099}
    assert side["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8099}
    assert side["resources"] == {
        "requests": {"cpu": "5m", "memory": "32Mi"},
        "limits": {"memory": "64Mi"},
    }
    assert mounts(side) == {
        "token-refresher-token": {
            "name": "token-refresher-token",
            "mountPath": "/var/run/secrets/token-refresher",
        },
        "token-refresher-state": {
            "name": "token-refresher-state",
            "mountPath": "/var/lib/token-refresher",
        },
        "token-refresher-client-secret": {
            "name": "token-refresher-client-secret",
            "mountPath": "/var/run/secrets/token-refresher.io/client-secret",
            "readOnly": True,
        },
        "token-refresher-report-token": {
            "name": "token-refresher-report-token",
            "mountPath": "/var/run/secrets/token-refresher.io/report",
            "readOnly": True,
        },
    }
    assert pod["metadata"]["annotations"][P + "injected"] == "true"


def test_volumes_are_memory_backed_and_secrets_are_items() -> None:
    vols = volumes(injected(make_pod(BASE)))
    assert vols["token-refresher-token"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert vols["token-refresher-state"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert vols["token-refresher-client-secret"]["secret"] == {
        "secretName": "billing-oauth",
        "items": [{"key": "secret", "path": "client-secret"}],
        "defaultMode": 0o444,
    }
    assert vols["token-refresher-report-token"]["projected"] == {
        "sources": [
            {"serviceAccountToken": {"audience": AUD, "expirationSeconds": 3600, "path": "token"}}
        ]
    }
    assert set(vols) == {
        "token-refresher-token",
        "token-refresher-state",
        "token-refresher-client-secret",
        "token-refresher-report-token",
    }


def test_secret_files_are_0400_when_the_pod_has_an_fs_group() -> None:
    pod = injected(make_pod(BASE, securityContext={"fsGroup": 2000}))
    assert volumes(pod)["token-refresher-client-secret"]["secret"]["defaultMode"] == 0o400


def test_pod_security_restricted_fields_are_set_on_the_sidecar() -> None:
    assert sidecar(injected(make_pod(BASE)))["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_app_container_gets_a_read_only_token_mount_and_token_file() -> None:
    app = injected(make_pod(BASE))["spec"]["containers"][0]
    assert app["volumeMounts"] == [
        {
            "name": "token-refresher-token",
            "mountPath": "/var/run/secrets/token-refresher",
            "readOnly": True,
        }
    ]
    assert app["env"] == [{"name": "TOKEN_FILE", "value": "/var/run/secrets/token-refresher/token"}]


def test_credentials_and_state_are_mounted_only_into_the_sidecar() -> None:
    pod = injected(make_pod({**BASE, P + "grant": "refresh_token", P + "refresh-token": "r/t"}))
    for app in pod["spec"]["containers"]:
        assert set(mounts(app)) == {"token-refresher-token"}
    assert {"token-refresher-refresh-token", "token-refresher-state"} <= set(mounts(sidecar(pod)))
    state = env(sidecar(pod))["TOKEN_REFRESHER_STATE_FILE"]
    assert not state.startswith("/var/run/secrets/token-refresher/")


def test_no_report_config_means_no_report_env_and_no_report_token() -> None:
    pod = injected(make_pod(BASE), config=NO_REPORT)
    assert not [name for name in env(sidecar(pod)) if "REPORT" in name]
    assert "token-refresher-report-token" not in volumes(pod)


# --- grants and client authentication ---------------------------------------------------

SA = "/var/run/secrets/token-refresher.io/serviceaccount/token"
SECRET = "/var/run/secrets/token-refresher.io/client-secret/client-secret"
KEY = "/var/run/secrets/token-refresher.io/private-key/private-key"
REFRESH = "/var/run/secrets/token-refresher.io/refresh-token/refresh-token"


@pytest.mark.parametrize(
    ("extra", "want_env", "want_volumes"),
    [
        pytest.param(
            {P + "grant": "client_credentials"},
            {
                "TOKEN_REFRESHER_GRANT": "client_credentials",
                "TOKEN_REFRESHER_CLIENT_SECRET_FILE": SECRET,
            },
            {"token-refresher-client-secret"},
            id="client_credentials",
        ),
        pytest.param(
            {P + "grant": "refresh_token", P + "refresh-token": "billing-oauth/refresh"},
            {
                "TOKEN_REFRESHER_GRANT": "refresh_token",
                "TOKEN_REFRESHER_REFRESH_TOKEN_FILE": REFRESH,
            },
            {"token-refresher-client-secret", "token-refresher-refresh-token"},
            id="refresh_token",
        ),
        pytest.param(
            {P + "grant": "token_exchange", P + "service-account-audience": "api://exchange"},
            {
                "TOKEN_REFRESHER_GRANT": "token_exchange",
                "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE": SA,
            },
            {"token-refresher-client-secret", "token-refresher-sa-token"},
            id="token_exchange",
        ),
        pytest.param(
            {P + "grant": "jwt_bearer", P + "service-account-audience": "api://bearer"},
            {
                "TOKEN_REFRESHER_GRANT": "jwt_bearer",
                "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE": SA,
            },
            {"token-refresher-client-secret", "token-refresher-sa-token"},
            id="jwt_bearer",
        ),
    ],
)
def test_each_grant(
    extra: dict[str, str], want_env: dict[str, str], want_volumes: set[str]
) -> None:
    pod = injected(make_pod({**BASE, **extra}))
    assert want_env.items() <= env(sidecar(pod)).items()
    base = {"token-refresher-token", "token-refresher-state", "token-refresher-report-token"}
    assert set(volumes(pod)) == base | want_volumes


def test_service_account_token_has_the_requested_audience() -> None:
    pod = injected(
        make_pod({**BASE, P + "grant": "token_exchange", P + "service-account-audience": "api://x"})
    )
    source = volumes(pod)["token-refresher-sa-token"]["projected"]["sources"][0]
    assert source == {
        "serviceAccountToken": {"audience": "api://x", "expirationSeconds": 3600, "path": "token"}
    }
    assert mounts(sidecar(pod))["token-refresher-sa-token"] == {
        "name": "token-refresher-sa-token",
        "mountPath": "/var/run/secrets/token-refresher.io/serviceaccount",
        "readOnly": True,
    }


NO_SECRET = {k: v for k, v in BASE.items() if k != P + "client-secret"}


@pytest.mark.parametrize(
    ("annotations", "want_env"),
    [
        pytest.param(
            {**BASE, P + "client-auth": "client_secret_basic"},
            {
                "TOKEN_REFRESHER_CLIENT_AUTH": "client_secret_basic",
                "TOKEN_REFRESHER_CLIENT_SECRET_FILE": SECRET,
            },
            id="client_secret_basic",
        ),
        pytest.param(
            {**BASE, P + "client-auth": "client_secret_post"},
            {
                "TOKEN_REFRESHER_CLIENT_AUTH": "client_secret_post",
                "TOKEN_REFRESHER_CLIENT_SECRET_FILE": SECRET,
            },
            id="client_secret_post",
        ),
        pytest.param(
            {
                **NO_SECRET,
                P + "client-auth": "private_key_jwt",
                P + "private-key": "billing-key/tls.key",
            },
            {
                "TOKEN_REFRESHER_CLIENT_AUTH": "private_key_jwt",
                "TOKEN_REFRESHER_PRIVATE_KEY_FILE": KEY,
            },
            id="private_key_jwt",
        ),
        pytest.param(
            {
                **NO_SECRET,
                P + "client-auth": "private_key_jwt",
                P + "private-key": "billing-key/tls.key",
                P + "private-key-id": "billing-2026-11",
            },
            {
                "TOKEN_REFRESHER_CLIENT_AUTH": "private_key_jwt",
                "TOKEN_REFRESHER_PRIVATE_KEY_FILE": KEY,
                "TOKEN_REFRESHER_PRIVATE_KEY_ID": "billing-2026-11",
            },
            id="private_key_jwt-with-key-id",
        ),
        pytest.param(
            {
                **NO_SECRET,
                P + "client-auth": "service_account",
                P + "service-account-audience": "idp",
            },
            {
                "TOKEN_REFRESHER_CLIENT_AUTH": "service_account",
                "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE": SA,
            },
            id="service_account",
        ),
        pytest.param(
            {**NO_SECRET, P + "client-auth": "none"},
            {"TOKEN_REFRESHER_CLIENT_AUTH": "none"},
            id="none",
        ),
    ],
)
def test_each_client_auth(annotations: dict[str, str], want_env: dict[str, str]) -> None:
    side_env = env(sidecar(injected(make_pod(annotations))))
    assert want_env.items() <= side_env.items()
    credential_vars = {
        "TOKEN_REFRESHER_CLIENT_SECRET_FILE",
        "TOKEN_REFRESHER_PRIVATE_KEY_FILE",
        "TOKEN_REFRESHER_SERVICE_ACCOUNT_TOKEN_FILE",
    }
    assert credential_vars & set(side_env) == credential_vars & set(want_env)


def test_private_key_secret_is_mounted_with_its_key() -> None:
    pod = injected(
        make_pod(
            {**NO_SECRET, P + "client-auth": "private_key_jwt", P + "private-key": "k/tls.key"}
        )
    )
    assert volumes(pod)["token-refresher-private-key"]["secret"]["items"] == [
        {"key": "tls.key", "path": "private-key"}
    ]


# --- defaults and selection -------------------------------------------------------------


def test_pod_annotations_override_cluster_defaults() -> None:
    config = CONFIG.model_copy(
        update={
            "defaults": {
                "issuer": "https://default-idp.example",
                "client-id": "default-client",
                "format": "json",
                "scope": "default.read",
                "mount-path": "/tokens",
                "file": "access",
            }
        }
    )
    pod = make_pod(
        {P + "inject": "true", P + "client-id": "mine", P + "format": "raw", P + "scope": ""}
    )
    side_env = env(sidecar(injected(pod, config=config)))
    assert side_env["TOKEN_REFRESHER_ISSUER"] == "https://default-idp.example"  # default kept
    assert side_env["TOKEN_REFRESHER_CLIENT_ID"] == "mine"  # pod wins
    assert side_env["TOKEN_REFRESHER_FORMAT"] == "raw"  # pod wins
    assert "TOKEN_REFRESHER_SCOPE" not in side_env  # an empty annotation unsets a default
    assert side_env["TOKEN_REFRESHER_OUTPUT"] == "/tokens/access"


def test_defaults_cannot_turn_injection_on() -> None:
    config = CONFIG.model_copy(update={"defaults": {"inject": "true", **{"client-id": "x"}}})
    assert ops_for(make_pod({P + "issuer": "https://idp.example"}), config=config) == []


def test_every_app_container_is_selected_by_default() -> None:
    pod = injected(make_pod(BASE, containers=("app", "worker"), init=("migrate",)))
    for app in pod["spec"]["containers"]:
        assert mounts(app)["token-refresher-token"]["readOnly"] is True
    assert "volumeMounts" not in pod["spec"]["initContainers"][1]  # migrate, after the sidecar


def test_containers_annotation_selects_app_and_init_containers() -> None:
    pod = injected(
        make_pod(
            {**BASE, P + "containers": "worker, migrate"},
            containers=("app", "worker"),
            init=("setup", "migrate"),
        )
    )
    by_name = {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]}
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [
        "token-refresher",
        "setup",
        "migrate",
    ]
    assert "volumeMounts" not in by_name["app"]
    assert "volumeMounts" not in by_name["setup"]
    assert env(by_name["worker"])["TOKEN_FILE"] == "/var/run/secrets/token-refresher/token"
    assert env(by_name["migrate"])["TOKEN_FILE"] == "/var/run/secrets/token-refresher/token"


# --- JSON Patch details ------------------------------------------------------------------


def test_absent_arrays_are_added_whole_and_present_ones_appended() -> None:
    bare = ops_for(make_pod(BASE))
    assert {op["path"] for op in bare} == {
        "/metadata/annotations/token-refresher.io~1injected",
        "/spec/volumes",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/env",
        "/spec/initContainers",
    }
    full = make_pod(BASE, init=("setup",), volumes=[{"name": "data", "emptyDir": {}}])
    full["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    full["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    paths = [op["path"] for op in ops_for(full)]
    assert "/spec/volumes/-" in paths
    assert "/spec/containers/0/volumeMounts/-" in paths
    assert "/spec/containers/0/env/-" in paths
    assert paths[-1] == "/spec/initContainers/0"
    pod = jsonpatch.apply_patch(full, ops_for(full))
    assert pod["spec"]["containers"][0]["env"][0] == {"name": "A", "value": "1"}
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["token-refresher", "setup"]


def test_annotation_key_slash_is_escaped_in_the_pointer() -> None:
    assert ops_for(make_pod(BASE))[0] == {
        "op": "add",
        "path": "/metadata/annotations/token-refresher.io~1injected",
        "value": "true",
    }


def test_a_token_file_the_author_set_is_kept() -> None:
    pod = make_pod(BASE)
    pod["spec"]["containers"][0]["env"] = [{"name": "TOKEN_FILE", "value": "/elsewhere"}]
    assert injected(pod)["spec"]["containers"][0]["env"] == [
        {"name": "TOKEN_FILE", "value": "/elsewhere"}
    ]


def test_injection_is_idempotent() -> None:
    pod = injected(make_pod(BASE, init=("setup",)))
    assert ops_for(pod) == []
    assert [c["name"] for c in pod["spec"]["initContainers"]].count("token-refresher") == 1


def test_the_input_pod_is_not_modified() -> None:
    pod = make_pod(BASE)
    before = copy.deepcopy(pod)
    ops_for(pod)
    assert pod == before


@pytest.mark.parametrize(
    ("annotations", "namespace", "reason"),
    [
        (None, "apps", 'not annotated token-refresher.io/inject: "true"'),
        (
            {**BASE, P + "inject": "false"},
            "apps",
            'not annotated token-refresher.io/inject: "true"',
        ),
        (BASE, "kube-system", "pods in namespace kube-system are never injected"),
        (BASE, OPERATOR_NS, "pods in namespace token-refresher are never injected"),
    ],
)
def test_no_patch(annotations: dict[str, str] | None, namespace: str, reason: str) -> None:
    pod = make_pod(annotations)
    assert ops_for(pod, namespace=namespace) == []
    got = skip_reason(pod=pod, namespace=namespace, operator_namespace=OPERATOR_NS)
    assert got == reason


# --- bad annotations: the exact messages -----------------------------------------------

GRANTS = "client_credentials, refresh_token, token_exchange, jwt_bearer"
AUTHS = "client_secret_basic, client_secret_post, private_key_jwt, service_account, none"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({P + "grant": "foo"}, f"token-refresher.io/grant: must be one of {GRANTS} (got 'foo')"),
        (
            {P + "client-auth": "basic"},
            f"token-refresher.io/client-auth: must be one of {AUTHS} (got 'basic')",
        ),
        ({P + "format": "xml"}, "token-refresher.io/format: must be one of raw, json (got 'xml')"),
        (
            {P + "client-secret": "billing-oauth"},
            "token-refresher.io/client-secret: must be <secret>/<key>: the name of a Secret in "
            "the pod's namespace and one of its keys, such as billing-oauth/secret "
            "(got 'billing-oauth')",
        ),
        (
            {P + "private-key": "Bad_Name/key"},
            "token-refresher.io/private-key: must be <secret>/<key>: the name of a Secret in "
            "the pod's namespace and one of its keys, such as billing-oauth/secret "
            "(got 'Bad_Name/key')",
        ),
        (
            {P + "refresh-token": "s/a/b"},
            "token-refresher.io/refresh-token: must be <secret>/<key>: the name of a Secret in the "
            "pod's namespace and one of its keys, such as billing-oauth/secret (got 's/a/b')",
        ),
        (
            {P + "refresh-ratio": "1.5"},
            "token-refresher.io/refresh-ratio: must be a number between 0 and 1, both excluded, "
            "such as 0.7 (got '1.5')",
        ),
        (
            {P + "refresh-ratio": "soon"},
            "token-refresher.io/refresh-ratio: must be a number between 0 and 1, both excluded, "
            "such as 0.7 (got 'soon')",
        ),
        (
            {P + "mount-path": "tokens"},
            "token-refresher.io/mount-path: must be an absolute directory path such as "
            "/var/run/secrets/token-refresher (got 'tokens')",
        ),
        (
            {P + "mount-path": "/var/run/secrets/token-refresher.io/x"},
            "token-refresher.io/mount-path: must not be /var/run/secrets/token-refresher.io, "
            "inside it or above it: the sidecar keeps its credentials there "
            "(got '/var/run/secrets/token-refresher.io/x')",
        ),
        (
            {P + "file": "a/b"},
            "token-refresher.io/file: must be a plain file name such as token: letters, digits, "
            "'.', '-' and '_', no '/' (got 'a/b')",
        ),
        (
            {P + "containers": "nope"},
            "token-refresher.io/containers: no container named 'nope' in the pod (it has: app)",
        ),
        (
            {P + "containers": "app,,"},
            "token-refresher.io/containers: must be a comma-separated list of container names "
            "such as app,worker (got 'app,,')",
        ),
        (
            {P + "issuer": "idp.example"},
            "token-refresher.io/issuer: must be an http(s) URL such as "
            "https://login.example.com/realms/prod (got 'idp.example')",
        ),
        (
            {P + "scope": "x" * 3000},
            "token-refresher.io/scope: must be at most 2048 characters (got 3000)",
        ),
        (
            {P + "grnt": "refresh_token"},
            "token-refresher.io/grnt: unknown setting; known: audience, client-auth, client-id, "
            "client-secret, containers, family-secret, file, format, grant, issuer, mount-path, "
            "private-key, "
            "private-key-id, refresh-ratio, refresh-token, resource, scope, "
            "service-account-audience, "
            "subject-token-type, token-params, token-url",
        ),
    ],
)
def test_bad_annotation_is_denied_with_what_is_allowed(extra: dict[str, str], message: str) -> None:
    assert denial({**BASE, **extra}) == [message]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {P + "inject": "true", P + "client-id": "c"},
            "token-refresher.io/issuer or token-refresher.io/token-url: one is required (an OIDC "
            "issuer to discover the token endpoint, or the endpoint itself)",
        ),
        (
            {**BASE, P + "grant": "refresh_token"},
            "token-refresher.io/refresh-token: required when "
            "token-refresher.io/grant=refresh_token",
        ),
        (
            {**BASE, P + "grant": "token_exchange"},
            "token-refresher.io/service-account-audience: required when "
            "token-refresher.io/grant=token_exchange",
        ),
        (
            {**NO_SECRET, P + "client-auth": "client_secret_post"},
            "token-refresher.io/client-secret: required for client authentication "
            "client_secret_post",
        ),
        (
            {**NO_SECRET, P + "client-auth": "private_key_jwt"},
            "token-refresher.io/private-key: required for client authentication private_key_jwt",
        ),
    ],
)
def test_combinations_the_sidecar_refuses_are_denied_in_annotation_terms(
    annotations: dict[str, str], message: str
) -> None:
    assert denial(annotations) == [message]


def test_every_problem_is_reported_at_once() -> None:
    lines = denial({**BASE, P + "grant": "foo", P + "format": "xml", P + "file": "../x"})
    assert [line.split(":")[0] for line in lines] == [
        "token-refresher.io/file",
        "token-refresher.io/format",
        "token-refresher.io/grant",
    ]


def test_denial_message_is_one_line() -> None:
    with pytest.raises(AnnotationError) as info:
        ops_for(make_pod({**BASE, P + "grant": "foo", P + "format": "xml"}))
    assert "\n" not in info.value.message
    assert info.value.message.count("; ") == 1


def test_mount_path_already_used_by_the_app_is_denied() -> None:
    pod = make_pod(BASE)
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "other", "mountPath": "/var/run/secrets/token-refresher/"}
    ]
    with pytest.raises(AnnotationError) as info:
        ops_for(pod)
    assert info.value.lines == [
        "token-refresher.io/mount-path: container 'app' already mounts a volume at "
        "/var/run/secrets/token-refresher; choose another directory"
    ]


def test_a_volume_with_a_reserved_name_is_denied() -> None:
    pod = make_pod(BASE, volumes=[{"name": "token-refresher-token", "emptyDir": {}}])
    with pytest.raises(AnnotationError) as info:
        ops_for(pod)
    assert info.value.lines == [
        "spec.volumes: the pod already has a volume named token-refresher-token, which the "
        "token-refresher sidecar needs; rename it"
    ]


# --- the contract with the sidecar -------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        BASE,
        {**BASE, P + "grant": "refresh_token", P + "refresh-token": "r/t", P + "format": "json"},
        {**NO_SECRET, P + "grant": "jwt_bearer", P + "service-account-audience": "a"},
        {**NO_SECRET, P + "client-auth": "private_key_jwt", P + "private-key": "k/pem"},
    ],
)
def test_rendered_env_builds_the_sidecars_settings(annotations: dict[str, str]) -> None:
    side = sidecar(injected(make_pod({**annotations, P + "refresh-ratio": "0.5"})))
    flat = {var["name"]: var.get("value", "from-the-downward-api") for var in side["env"]}
    settings = Settings.from_env(flat)
    assert str(settings.output) == "/var/run/secrets/token-refresher/token"
    assert str(settings.effective_state_file) == "/var/lib/token-refresher/refresh-token"
    assert settings.refresh_ratio == 0.5
    assert check_env(side["env"]).output == settings.output


def test_no_value_is_shared_between_operations_or_with_the_config() -> None:
    # build_patch returns its operations uncopied: each list and dict in them must be
    # its own, so that a consumer changing one cannot change another, or the config.
    pod = make_pod({**BASE, P + "containers": "app,worker"}, containers=("app", "worker"))
    seen: dict[int, Any] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict | list):
            assert id(value) not in seen, value
            seen[id(value)] = value
            for item in value.values() if isinstance(value, dict) else value:
                walk(item)

    walk(ops_for(pod))
    resources = CONFIG.sidecar.resources
    config_values = [resources, *resources.values()]
    assert not [v for v in seen.values() if any(v is c for c in config_values)]


def test_the_verdict_on_an_env_is_remembered_and_the_same_either_way() -> None:
    pod = make_pod({**BASE, P + "grant": "client_credential"})
    for _ in range(2):
        with pytest.raises(AnnotationError, match=r"token-refresher\.io/grant: must be one of"):
            ops_for(pod)
    assert ops_for(make_pod(BASE)) == ops_for(make_pod(BASE))
