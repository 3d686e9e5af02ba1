"""The DEV MutatingWebhookConfiguration body."""

from __future__ import annotations

import base64

from token_refresher_operator.registration import webhook_configuration


def test_dev_webhook_configuration_calls_only_for_annotated_pods() -> None:
    body = webhook_configuration(
        name="token-refresher-dev",
        url="https://127.0.0.1:9443/mutate",
        ca_bundle=b"PEM",
        operator_namespace="tr-system",
    )
    [hook] = body["webhooks"]
    assert body["metadata"]["name"] == "token-refresher-dev"
    assert hook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "tr-system"],
            }
        ]
    }
    assert hook["matchConditions"] == [
        {
            "name": "inject-annotation",
            "expression": "has(object.metadata.annotations) && "
            "'token-refresher.io/inject' in object.metadata.annotations && "
            "object.metadata.annotations['token-refresher.io/inject'] == 'true'",
        }
    ]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["reinvocationPolicy"]) == (
        "Fail",
        "None",
        "Never",
    )
    assert hook["timeoutSeconds"] == 10
