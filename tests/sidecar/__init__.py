"""Sidecar tests: settings, grants, schedule, writer, endpoints, logs and metrics, with
fakes for time and the IdP (tests.support.fakes) and the real console script."""
