"""Fault tests: the real sidecar as a process against real IdPs behind a fault-injecting
proxy, a failing disk, kills and restarts, and the operator under apiserver outages."""
