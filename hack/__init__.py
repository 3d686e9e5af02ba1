"""Developer programs run from the repository root as modules (`python -m hack.demo`),
so that they import the test harness (`tests.node`, `tests.idp`) as packages rather
than through edits to `sys.path`."""
