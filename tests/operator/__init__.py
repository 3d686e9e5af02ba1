"""Operator tests: the patch builder, webhook, report endpoint, events, and end to end."""
