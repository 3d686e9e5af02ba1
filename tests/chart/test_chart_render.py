"""What `helm template` renders, for every values mode in conftest.VALUES.

Each test reads the parsed objects the cluster would receive: the webhook configuration,
RBAC, the operator's pods, the CONFIG_FILE (docs/CONTRACTS.md) and the TLS material.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.chart.helm import (
    CHART,
    EXISTING_CA_PEM,
    FULLNAME,
    NAMESPACE,
    VALUES,
    Chart,
    Rendered,
)

SERVICE_HOST = f"{FULLNAME}.{NAMESPACE}.svc"
INJECT_CONDITION = (
    "has(object.metadata.annotations) && "
    "'token-refresher.io/inject' in object.metadata.annotations && "
    "object.metadata.annotations['token-refresher.io/inject'] == 'true'"
)


def pod_specs(rendered: Rendered) -> list[dict[str, Any]]:
    """Every pod spec the chart renders: the operator's and the `helm test` pod."""
    return [rendered.operator_pod] + [p["spec"] for p in rendered.all("Pod")]


def ca_bundle(rendered: Rendered) -> str | None:
    encoded = rendered.webhook["clientConfig"].get("caBundle")
    return None if encoded is None else base64.b64decode(encoded).decode()


# --- chart metadata -----------------------------------------------------------------------


def test_chart_requires_kubernetes_with_match_conditions_and_native_sidecars() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["kubeVersion"] == ">=1.30.0-0"
    assert meta["appVersion"] == "0.1.0"


def test_chart_refuses_kubernetes_1_29(chart: Chart) -> None:
    proc = chart.run("template", "tr", str(CHART), "--kube-version", "1.29.9")
    assert proc.returncode != 0
    assert "kubeVersion" in proc.stderr


# --- the webhook ------------------------------------------------------------------------------


def test_webhook_sees_only_annotated_pod_creations_outside_excluded_namespaces(
    rendered: Rendered, mode: str
) -> None:
    webhook = rendered.webhook
    assert webhook["name"] == "inject.token-refresher.io"
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    [condition] = webhook["matchConditions"]
    assert " ".join(condition["expression"].split()) == INJECT_CONDITION
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", NAMESPACE],
            }
        ]
    }
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["reinvocationPolicy"] == "Never"
    expected_policy = VALUES[mode].get("webhook", {})
    assert webhook["failurePolicy"] == expected_policy.get("failurePolicy", "Fail")
    assert webhook["timeoutSeconds"] == expected_policy.get("timeoutSeconds", 10)


def test_webhook_calls_mutate_on_the_operator_service(rendered: Rendered) -> None:
    assert rendered.webhook["clientConfig"]["service"] == {
        "name": FULLNAME,
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }
    service = rendered.one("Service", FULLNAME)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports["webhook"] == (443, "webhook")
    assert ports["report"] == (8444, "report")
    [container] = rendered.operator_pod["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"webhook": 8443, "report": 8444, "health": 8080}
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_release_namespace_is_excluded_even_when_the_list_is_replaced(chart: Chart) -> None:
    webhook = chart.template({"webhook": {"excludedNamespaces": ["infra"]}}).webhook
    [expression] = webhook["namespaceSelector"]["matchExpressions"]
    assert expression["values"] == ["infra", NAMESPACE]


# --- TLS modes --------------------------------------------------------------------------------


def test_generate_mode_gives_one_ca_to_the_apiserver_the_sidecars_and_the_secret(
    default: Rendered,
) -> None:
    secret = default.one("Secret", f"{FULLNAME}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"]).decode()
    assert ca_bundle(default) == ca_pem
    assert default.config["report"]["caBundle"] == ca_pem
    assert "cert-manager.io/inject-ca-from" not in (
        default.one("MutatingWebhookConfiguration")["metadata"].get("annotations") or {}
    )


def test_generate_mode_certificate_is_signed_by_the_ca_for_the_service_name(
    default: Rendered,
) -> None:
    data = default.one("Secret", f"{FULLNAME}-tls")["data"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_HOST in names.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_secret_mode_uses_the_existing_secret_and_the_given_ca(chart: Chart) -> None:
    rendered = chart.template(VALUES["secret"])
    assert rendered.all("Secret") == []
    assert ca_bundle(rendered) == EXISTING_CA_PEM
    assert rendered.config["report"]["caBundle"] == EXISTING_CA_PEM
    tls = {v["name"]: v for v in rendered.operator_pod["volumes"]}["tls"]
    assert tls["secret"]["secretName"] == "my-tls"


def test_cert_manager_mode_issues_the_certificate_and_injects_its_ca(chart: Chart) -> None:
    rendered = chart.template(VALUES["cert-manager"])
    assert rendered.all("Secret") == []
    config = rendered.one("MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{FULLNAME}-tls"
    )
    assert ca_bundle(rendered) is None  # the cainjector fills it in

    selfsigned = rendered.one("Issuer", f"{FULLNAME}-selfsigned")
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca_cert = rendered.one("Certificate", f"{FULLNAME}-ca")["spec"]
    assert ca_cert["isCA"] is True
    assert ca_cert["issuerRef"] == {"kind": "Issuer", "name": f"{FULLNAME}-selfsigned"}
    ca_issuer = rendered.one("Issuer", f"{FULLNAME}-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_cert["secretName"]}}
    serving = rendered.one("Certificate", f"{FULLNAME}-tls")["spec"]
    assert serving["issuerRef"] == {"kind": "Issuer", "name": f"{FULLNAME}-ca"}
    assert SERVICE_HOST in serving["dnsNames"]
    tls = {v["name"]: v for v in rendered.operator_pod["volumes"]}["tls"]
    assert tls["secret"]["secretName"] == serving["secretName"]


def test_secret_mode_without_a_secret_name_or_ca_is_refused(chart: Chart) -> None:
    for secret in ({"caBundle": EXISTING_CA_PEM}, {"name": "my-tls"}):
        values = {"tls": {"mode": "secret", "secret": secret}}
        proc = chart.run("template", "tr", str(CHART), "--kube-version", "1.30.0", values=values)
        assert proc.returncode != 0, secret
        assert "tls.secret" in proc.stderr or "/tls/secret" in proc.stderr, proc.stderr


# --- RBAC ---------------------------------------------------------------------------------------


def test_operator_may_do_exactly_what_it_needs_and_nothing_on_secrets(
    rendered: Rendered,
) -> None:
    assert rendered.all("Role") == []
    assert rendered.all("RoleBinding") == []
    role = rendered.one("ClusterRole", FULLNAME)
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
    }
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    binding = rendered.one("ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert rendered.operator_pod["serviceAccountName"] == FULLNAME


# --- the operator Deployment ----------------------------------------------------------------


def assert_restricted(spec: dict[str, Any]) -> None:
    """Pod Security Standards "restricted", plus a read-only root and a numeric UID."""
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc["runAsUser"] == 65532, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
    assert not any("hostPath" in v for v in spec.get("volumes", [])), (
        "no host paths under restricted"
    )
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_namespace)


def test_every_pod_the_chart_renders_is_restricted(rendered: Rendered) -> None:
    for spec in pod_specs(rendered):
        assert_restricted(spec)


def test_operator_runs_two_spread_replicas_that_survive_a_drain(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    [term] = rendered.operator_pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = rendered.one("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_operator_pod_mounts_an_api_token_but_the_service_account_does_not(
    rendered: Rendered,
) -> None:
    assert rendered.operator_pod["automountServiceAccountToken"] is True
    assert rendered.one("ServiceAccount", FULLNAME)["automountServiceAccountToken"] is False


def test_operator_probes_use_the_health_port(rendered: Rendered) -> None:
    [container] = rendered.operator_pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # The first probe waits for the health server on the early-bound port (cli.main):
    # long enough for kopf to load on a busy node, and asked from the first second.
    assert container["startupProbe"]["periodSeconds"] == 1
    assert container["startupProbe"]["timeoutSeconds"] >= 30


def test_operator_env_and_mounts_follow_the_contract(rendered: Rendered) -> None:
    [container] = rendered.operator_pod["containers"]
    env = {e["name"].removeprefix("TOKEN_REFRESHER_OPERATOR_"): e for e in container["env"]}
    assert env.pop("NAMESPACE")["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {name: e["value"] for name, e in env.items()} == {
        "WEBHOOK_PORT": "8443",
        "REPORT_PORT": "8444",
        "HEALTH_PORT": "8080",
        "LISTEN_HOST": "0.0.0.0",
        "TLS_CERT_FILE": "/etc/token-refresher/tls/tls.crt",
        "TLS_KEY_FILE": "/etc/token-refresher/tls/tls.key",
        "CONFIG_FILE": "/etc/token-refresher/config/config.yaml",
        "REPORT_AUDIENCE": "token-refresher-report",
        "DEV": "false",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.operator_pod["volumes"]}
    assert mounts["tls"]["mountPath"] == "/etc/token-refresher/tls"
    assert mounts["tls"]["readOnly"] is True
    assert mounts["config"]["mountPath"] == "/etc/token-refresher/config"
    assert (
        volumes["config"]["configMap"]["name"]
        == rendered.one("ConfigMap", FULLNAME)["metadata"]["name"]
    )
    assert "secret" in volumes["tls"]


def test_operator_image_defaults_to_the_app_version(default: Rendered) -> None:
    [container] = default.operator_pod["containers"]
    assert container["image"] == "ghcr.io/token-refresher/token-refresher-operator:0.1.0"


# --- CONFIG_FILE --------------------------------------------------------------------------------


def test_config_file_follows_the_contract(default: Rendered) -> None:
    config = default.config
    assert config["report"].pop("caBundle").startswith("-----BEGIN CERTIFICATE-----")
    assert config == {
        "defaults": {
            "file": "token",
            "format": "raw",
            "mount-path": "/var/run/secrets/token-refresher",
        },
        "sidecar": {
            "image": "ghcr.io/token-refresher/token-refresher:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "resources": {
                "requests": {"cpu": "5m", "memory": "32Mi"},
                "limits": {"memory": "64Mi"},
            },
            "volumeSizeLimit": "1Mi",
            "port": 8099,
        },
        "report": {"url": f"https://{SERVICE_HOST}:8444/report"},
        "excludedNamespaces": ["kube-system", NAMESPACE],
    }


def test_every_annotation_default_reaches_the_config_as_a_string(chart: Chart) -> None:
    values = VALUES["custom-defaults"]
    config = chart.template(values).config
    assert config["defaults"] == {k: str(v) for k, v in values["defaults"].items()}
    assert config["sidecar"] == {
        "image": "registry.example/tr@sha256:" + "a" * 64,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeSizeLimit": "2Mi",
        "port": 9099,
    }


def test_config_file_loads_in_the_operator(rendered: Rendered, tmp_path: Path) -> None:
    from token_refresher_operator import config

    path = tmp_path / "config.yaml"
    path.write_text(rendered.one("ConfigMap", FULLNAME)["data"]["config.yaml"])
    loaded = config.load_cluster_config(path)
    assert loaded.report is not None
    assert str(loaded.report.url) == f"https://{SERVICE_HOST}:8444/report"


def test_changing_the_config_rolls_the_operator_pods(chart: Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        # secret mode: the rendering is otherwise deterministic (no generated keys).
        template = chart.template({**VALUES["secret"], **values}).one("Deployment")
        return str(template["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"defaults": {"format": "json"}})


# --- ServiceMonitor -----------------------------------------------------------------------------


def test_service_monitor_is_off_by_default(default: Rendered) -> None:
    assert default.all("ServiceMonitor") == []
    ports = [p["name"] for p in default.one("Service")["spec"]["ports"]]
    assert ports == ["webhook", "report"]


def test_service_monitor_scrapes_the_operator_service(chart: Chart) -> None:
    rendered = chart.template(VALUES["service-monitor"])
    monitor = rendered.one("ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = rendered.one("Service", FULLNAME)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    metrics = {p["name"]: p for p in service["spec"]["ports"]}[endpoint["port"]]
    assert metrics["targetPort"] == "health"


def test_grafana_dashboard_is_off_by_default(default: Rendered) -> None:
    assert [
        c for c in default.all("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ] == []


def test_grafana_dashboard_queries_only_metrics_that_exist(chart: Chart) -> None:
    from token_refresher.metrics import Metrics
    from token_refresher_operator.metrics import OperatorMetrics

    rendered = chart.template(VALUES["service-monitor"])
    configmap = rendered.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Kubernetes"}
    dashboard = json.loads(configmap["data"]["token-refresher.json"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"token_refresher_\w+", expr)}
    # By family, not by sample: a family labelled per token (issue 17) has no samples
    # until a token writes to it.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix
        for registry in (Metrics().registry, OperatorMetrics().registry)
        for family in registry.collect()
        for suffix in ("", *suffixes.get(family.type, ()))
    }
    assert queried, "no queries"
    assert queried <= exported, queried - exported
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Pods admitted, by result", "Admission latency", "Reports, by result"} <= titles


# --- helm test ---------------------------------------------------------------------------------


def test_helm_test_pod_checks_both_endpoints_with_the_ca(rendered: Rendered, mode: str) -> None:
    pod = rendered.one("Pod", f"{FULLNAME}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    [container] = spec["containers"]
    assert container["image"] == rendered.config["sidecar"]["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVICE_HOST"]["value"] == SERVICE_HOST
    if mode == "cert-manager":
        ref = env["CA_PEM"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{FULLNAME}-tls", "key": "ca.crt"}
    else:
        assert (
            env["CA_PEM"]["value"] == rendered.config["report"]["caBundle"] == ca_bundle(rendered)
        )
    service = rendered.one("Service", FULLNAME)
    assert not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


# --- every object -------------------------------------------------------------------------------

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def test_every_object_is_labelled_and_namespaced_in_the_release_namespace(
    rendered: Rendered,
) -> None:
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "tr", obj["kind"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", obj["kind"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, obj["kind"]
        else:
            assert meta["namespace"] == NAMESPACE, f"{obj['kind']} {meta['name']}"


# --- values and schema --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        "foo=bar",
        "webhook.foo=bar",
        "defaults.tokenurl=https://idp.example.com/token",
        "sidecar.image.foo=x",
        "tls.certManager.issuer=x",
        "tls.mode=vault",
        "webhook.failurePolicy=Maybe",
        "webhook.timeoutSeconds=60",
        "defaults.grant=password",
        "defaults.refresh-ratio=1.5",
        # Named tokens' keys (issue 17): checked as the unnamed key is; a name is a DNS
        # label other than default; mount-path and containers are not per token.
        "defaults.grant\\.payments=password",
        "defaults.issuer\\.partner=idp2.example",
        "defaults.audience\\.Pay_ments=x",
        "defaults.audience\\.default=x",
        "defaults.mount-path\\.payments=/x",
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(chart: Chart, setting: str) -> None:
    proc = chart.run("template", "tr", str(CHART), "--kube-version", "1.30.0", "--set", setting)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert "schema" in proc.stderr, proc.stderr


def _objects(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            found.append((path, schema))
        for key, value in schema.items():
            found += _objects(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _objects(value, f"{path}/{i}")
    return found


def test_schema_is_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in _objects(schema):
        if "if" in path or "then" in path:
            continue  # conditional refinements of an already-closed object
        # Closed objects list their keys; maps (labels, resources) type their values.
        assert node.get("additionalProperties") is False or isinstance(
            node.get("additionalProperties"), dict
        ), f"{path} is open"
        if "properties" in node:
            assert node["additionalProperties"] is False, f"{path} is open"


def _values_keys() -> list[tuple[str, int]]:
    """(dotted key, line number) of every key in values.yaml outside pass-through maps."""
    keys: list[tuple[str, int]] = []
    stack: list[tuple[int, str]] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        match = re.match(r"^( *)([\w.-]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [name for _, name in stack]
        stack.append((indent, match.group(2)))
        if "resources" in parents:
            continue  # Kubernetes' own ResourceRequirements
        keys.append((".".join([*parents, match.group(2)]), number))
    return keys


def test_every_value_is_documented_by_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [key for key, n in _values_keys() if not lines[n - 2].strip().startswith("#")]
    assert undocumented == []


def test_values_and_schema_list_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def keys(node: dict[str, Any], prefix: str) -> set[str]:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        out: set[str] = set()
        for name, sub in node.get("properties", {}).items():
            out.add(prefix + name)
            if name != "resources":
                out |= keys(sub, f"{prefix}{name}.")
        return out

    assert {key for key, _ in _values_keys()} == keys(schema, "")
