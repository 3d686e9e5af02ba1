"""Operator settings (env) and the cluster config file (YAML): defaults and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from token_refresher_operator.config import (
    ClusterConfig,
    load_cluster_config,
    load_settings,
)
from token_refresher_operator.errors import ConfigError

E = "TOKEN_REFRESHER_OPERATOR_"


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.lines


def test_settings_defaults_match_the_contract() -> None:
    settings = load_settings({E + "DEV": "true"})
    assert settings.namespace == "token-refresher"
    assert (settings.webhook_port, settings.report_port, settings.health_port) == (8443, 8444, 8080)
    assert settings.listen_host == "0.0.0.0"
    assert settings.tls_cert_file == Path("/etc/token-refresher/tls/tls.crt")
    assert settings.tls_key_file == Path("/etc/token-refresher/tls/tls.key")
    assert settings.config_file == Path("/etc/token-refresher/config/config.yaml")
    assert settings.report_audience == "token-refresher-report"
    assert settings.dev is True


def test_settings_ignore_the_process_environment_when_given_a_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(E + "WEBHOOK_PORT", "not-a-port")
    assert load_settings({E + "DEV": "1"}).webhook_port == 8443


def test_every_wrong_setting_is_one_line_naming_the_variable() -> None:
    assert problems(
        {E + "DEV": "true", E + "WEBHOOK_PORT": "99999", E + "NAMESPACE": "Bad_NS"}
    ) == [
        f"{E}NAMESPACE: must be a namespace name such as token-refresher (got 'Bad_NS')",
        f"{E}WEBHOOK_PORT: Input should be less than or equal to 65535 (got '99999')",
    ]


def test_unknown_setting_is_named() -> None:
    assert problems({E + "DEV": "true", E + "WEBHOOK_PROT": "1"}) == [
        f"{E}WEBHOOK_PROT: unknown setting"
    ]


def test_missing_tls_files_outside_dev_mode(tmp_path: Path) -> None:
    lines = problems(
        {E + "TLS_CERT_FILE": str(tmp_path / "c"), E + "TLS_KEY_FILE": str(tmp_path / "k")}
    )
    assert [line.split(":")[0] for line in lines] == [f"{E}TLS_CERT_FILE", f"{E}TLS_KEY_FILE"]
    assert "is not a readable file" in lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def config_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_cluster_config(path)
    return info.value.lines


def test_the_contract_example_loads(tmp_path: Path) -> None:
    config = load_cluster_config(
        write(
            tmp_path,
            """
defaults:
  format: raw
  mount-path: /var/run/secrets/token-refresher
  refresh-ratio: 0.5
sidecar:
  image: ghcr.io/token-refresher/token-refresher:0.1.0
  imagePullPolicy: IfNotPresent
  resources: {requests: {cpu: 5m, memory: 32Mi}, limits: {memory: 64Mi}}
  volumeSizeLimit: 1Mi
  port: 8099
report:
  url: https://token-refresher.token-refresher.svc:443/report
  caBundle: ""
""",
        )
    )
    assert config.defaults == {
        "format": "raw",
        "mount-path": "/var/run/secrets/token-refresher",
        "refresh-ratio": "0.5",
    }
    assert config.sidecar.image == "ghcr.io/token-refresher/token-refresher:0.1.0"
    assert config.sidecar.resources["limits"] == {"memory": "64Mi"}
    assert config.report is not None
    assert config.report.ca_bundle == ""


def test_an_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_cluster_config(write(tmp_path, ""))
    assert config == ClusterConfig()
    assert config.report is None
    assert config.sidecar.port == 8099


def test_config_file_problems_name_the_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
defaults: {grant: foo, colour: blue}
sidecar: {port: 0, volumeSizeLimit: lots, imagePullPolicy: Sometimes}
extra: 1
""",
    )
    lines = config_problems(path)
    assert lines == [
        f"{path}: defaults.colour: unknown setting; known: audience, client-auth, client-id, "
        "client-secret, containers, family-secret, file, format, grant, issuer, mount-path, "
        "private-key, "
        "private-key-id, refresh-ratio, refresh-token, resource, scope, "
        "service-account-audience, subject-token-type, token-params, token-url",
        f"{path}: defaults.grant: must be one of client_credentials, refresh_token, "
        "token_exchange, jwt_bearer (got 'foo')",
        f"{path}: sidecar.imagePullPolicy: Input should be 'Always', 'IfNotPresent' or 'Never' "
        "(got 'Sometimes')",
        f"{path}: sidecar.volumeSizeLimit: must be a Kubernetes quantity such as 32Mi or 5m "
        "(got 'lots')",
        f"{path}: sidecar.port: Input should be greater than or equal to 1 (got 0)",
        f"{path}: extra: unknown key",
    ]


def test_bad_yaml_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  format: [raw\n")
    [line] = config_problems(path)
    assert line.startswith(f"{path}: not valid YAML at line 3")


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    [line] = config_problems(tmp_path / "nope.yaml")
    assert line == (
        f"{E}CONFIG_FILE: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )
