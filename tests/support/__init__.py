"""What the tests, the demo and the benchmarks share: bounded waits, free ports, child
processes, test certificates (certs), the operator launched in DEV mode (operator),
Kubernetes manifests (kube), the leak check's patterns (secrets) and the fakes (fakes,
faultproxy).

One importable place, so no helper is copied and nothing reaches it through `sys.path`
(`hack/` imports it as `tests.support`). The harness modules (tests/controlplane.py,
tests/node.py, tests/idp.py) build on it and re-export what their users import from them.
"""

from tests.support.net import free_port, http_ok, listening
from tests.support.processes import python_output, start_process, stop_process
from tests.support.wait import WaitTimeout, wait_until, wait_until_async

__all__ = [
    "WaitTimeout",
    "free_port",
    "http_ok",
    "listening",
    "python_output",
    "start_process",
    "stop_process",
    "wait_until",
    "wait_until_async",
]
