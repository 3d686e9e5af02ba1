"""Chart tests: rendering, lint, static analysis, and installs into the real test apiserver."""
