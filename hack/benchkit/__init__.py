"""The sections of `make bench` (`python -m hack.bench`): sidecar, container, webhook,
fleet, reports, family, and the table. A benchmark toolkit, not a test suite: nothing here
asserts a timing. The programs the sections run in fresh interpreters are modules here
too (bare_request, webhook_stub, import_profile, fresh_import), linted and typed."""
