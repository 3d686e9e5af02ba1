"""End-to-end tests on the real local node (tests/node.py): real pods, images, chart."""
