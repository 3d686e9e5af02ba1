"""What one import costs in a fresh interpreter: resident memory before and after
importing MODULE, once AFTER... (the modules it would find loaded anyway) are in.

hack/benchkit/memory.py runs this file by path with `python -P` and reads one JSON line:
`{"kib": growth, "total_kib": VmRSS after}`.

Usage: fresh_import.py MODULE [AFTER...]
"""

from __future__ import annotations

import importlib
import json
import sys


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def main(argv: list[str]) -> None:
    module, *after = argv
    for name in after:
        importlib.import_module(name)
    before = rss_kib()
    importlib.import_module(module)
    print(json.dumps({"kib": rss_kib() - before, "total_kib": rss_kib()}))


if __name__ == "__main__":
    main(sys.argv[1:])
