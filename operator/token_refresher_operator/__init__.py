"""token-refresher operator: injects the sidecar into annotated pods and reports its failures.

A kopf operator serving a mutating admission webhook (`/mutate`) and a failure-report
endpoint (`/report`) that turns sidecar reports into Kubernetes Events on the pod.
The pure core is importable on its own: `build_patch` turns a pod into the JSON Patch
that injects the sidecar, with the cluster's `ClusterConfig`.
"""

from token_refresher_operator.config import ClusterConfig, OperatorSettings
from token_refresher_operator.errors import AnnotationError, ConfigError, OperatorError
from token_refresher_operator.patch import build_patch

__all__ = [
    "AnnotationError",
    "ClusterConfig",
    "ConfigError",
    "OperatorError",
    "OperatorSettings",
    "build_patch",
]
