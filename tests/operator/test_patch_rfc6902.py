"""The hand-built operations are RFC 6902: applied by a real JSON Patch library to the pod
they were built for, they give exactly the expected pod, checked in beside this test.

Two pods cover the choices the operations make: a bare one, where every array and the
annotations map is added whole, and a crowded one, where each is appended to (init
containers at index 0, so the sidecar runs first) and a key holding '/' is escaped.
Regenerate an expected pod only on purpose: `python -m tests.operator.test_patch_rfc6902`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.operator.test_patch import BASE, make_pod, ops_for

DATA = Path(__file__).parent / "data"


def _pods() -> dict[str, dict[str, Any]]:
    crowded = make_pod(
        {**BASE, "example.com/team": "billing"},
        init=("migrate",),
        volumes=[{"name": "cache", "emptyDir": {}}],
    )
    app = crowded["spec"]["containers"][0]
    app["env"] = [{"name": "MODE", "value": "prod"}]
    app["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    return {"bare": make_pod(dict(BASE)), "crowded": crowded}


@pytest.mark.parametrize("name", sorted(_pods()))
def test_the_operations_applied_by_jsonpatch_give_the_expected_pod(name: str) -> None:
    pod = _pods()[name]
    before = copy.deepcopy(pod)
    after = jsonpatch.JsonPatch(ops_for(pod)).apply(pod)
    assert pod == before  # the library applies to a copy; the input stays as it was
    expected = json.loads((DATA / f"injected-{name}.json").read_text())
    assert after == expected


if __name__ == "__main__":
    for name, pod in _pods().items():
        result = jsonpatch.apply_patch(pod, ops_for(pod))
        (DATA / f"injected-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
