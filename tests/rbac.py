"""The RBAC the report endpoint runs with, for the tests and the benchmark that run it
in-process as a service account: exactly what the README and the chart grant for it —
create tokenreviews, create/patch events, get (list, watch) pods — so a call that needs
more fails there as it would in a cluster. And the Role a workload sharing a refresh-token
family needs, read from docs/family.md, so the tests grant what users are told to grant.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["FAMILY_DOC", "family_rbac", "report_endpoint_rbac"]

FAMILY_DOC = Path(__file__).resolve().parent.parent / "docs" / "family.md"

_TEMPLATE = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: operator, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {ns}-operator}}
rules:
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-operator}}
subjects:
- {{kind: ServiceAccount, name: operator, namespace: {ns}}}
"""


def report_endpoint_rbac(namespace: str) -> str:
    """ServiceAccount `operator` in `namespace`, with its ClusterRole and binding (YAML)."""
    return _TEMPLATE.format(ns=namespace)


def family_rbac(namespace: str, service_account: str) -> tuple[str, list[str]]:
    """The Role and RoleBinding of docs/family.md, moved to `namespace` and bound to
    `service_account` (YAML), and the Secret names the Role is limited to."""
    text = FAMILY_DOC.read_text()
    block = text.split("<!-- family-rbac -->", 1)[1].split("<!-- /family-rbac -->", 1)[0]
    documents = list(yaml.safe_load_all(block.strip().removeprefix("```yaml").rstrip("`")))
    names: list[str] = []
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject.update(name=service_account, namespace=namespace)
        for rule in doc.get("rules", []):
            names += rule["resourceNames"]
    return yaml.safe_dump_all(documents), names
