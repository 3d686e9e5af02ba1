"""The RBAC the report endpoint runs with, for the tests and the benchmark that run it
in-process as a service account: exactly what the README and the chart grant for it —
create tokenreviews, create/patch events, get (list, watch) pods — so a call that needs
more fails there as it would in a cluster.
"""

from __future__ import annotations

__all__ = ["report_endpoint_rbac"]

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
