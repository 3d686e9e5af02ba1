"""The test suite: unit, contract, integration (real kube-apiserver, real IdPs), e2e, faults."""
