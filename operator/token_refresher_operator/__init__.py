"""token-refresher operator: injects the sidecar into annotated pods and reports its failures.

A kopf operator serving a mutating admission webhook (`/mutate`) and a failure-report
endpoint (`/report`) that turns sidecar reports into Kubernetes Events on the pod.
The pure core is importable on its own: `build_patch` turns a pod into the JSON Patch
that injects the sidecar, with the cluster's `ClusterConfig`.
"""

from typing import TYPE_CHECKING

from token_refresher.lazy import lazy_exports

if TYPE_CHECKING:
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

# Imported on first use: the console script (`cli`) binds the health port before it loads
# pydantic and kopf, and importing this package comes first.
__getattr__ = lazy_exports(
    __name__,
    {
        "AnnotationError": "errors",
        "ClusterConfig": "config",
        "ConfigError": "errors",
        "OperatorError": "errors",
        "OperatorSettings": "config",
        "build_patch": "patch",
    },
)
