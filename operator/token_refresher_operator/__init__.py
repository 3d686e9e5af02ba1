"""token-refresher operator: injects the sidecar into annotated pods and reports its failures.

A kopf operator serving a mutating admission webhook (`/mutate`) and a failure-report
endpoint (`/report`) that turns sidecar reports into Kubernetes Events on the pod.
"""

__all__: list[str] = []
