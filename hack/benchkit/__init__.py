"""The sections of `make bench` (hack/bench.py): sidecar, container, webhook, fleet,
reports, and the table. A benchmark toolkit, not a test suite: nothing here asserts a timing."""
