"""What a local Kubernetes node changes on this machine, recorded before and put back after.

A kubelet, kube-proxy and containerd on the host leave traces outside their own folders:
sysctls (the kubelet sets `vm.overcommit_memory`, `kernel.panic`; pod-to-Service traffic
needs `net.ipv4.ip_forward`), iptables chains (kube-proxy's `KUBE-*`, the kubelet's
canaries), network namespaces of pod sandboxes, mounts of pod volumes, kubepods cgroups,
and directories such as /var/lib/kubelet or /run/containerd. `HostState.capture()` reads
all of that before the node starts; `restore()` puts every piece back and `leftovers()`
lists whatever still differs, so a test run can fail when it would leave the machine
changed. The snapshot is also written to a file, so a run killed halfway is cleaned up
by the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["HOST_PATHS", "HostState", "mounts_under", "unmount_under"]

# Sysctl trees the node may change. Interface folders that appear later (the bridge,
# veths) are not in the snapshot and go away with their interface.
_SYSCTL_ROOTS = (
    "net/ipv4",
    "net/ipv6/conf/all",
    "net/ipv6/conf/default",
    "net/bridge",
    "net/netfilter",
    "vm",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys",
)
# Directories the kubelet, containerd and libcni create at fixed places, whatever their
# configured roots say.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
    "/run/containerd",
    "/var/lib/cni",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/containerd",
)
_FAMILIES = ("iptables", "ip6tables")
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for root in _SYSCTL_ROOTS:
        base = Path("/proc/sys") / root
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            if not os.access(path, os.W_OK):
                continue  # read-only: nothing can change it
            with contextlib.suppress(OSError):
                values[str(path.relative_to("/proc/sys"))] = path.read_text().strip()
    return values


def _save_tables(family: str) -> str:
    proc = subprocess.run([f"{family}-save"], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def _normalised(dump: str) -> list[str]:
    """iptables-save output without comments, packet counters and empty tables, for
    comparison: with the nf_tables backend a flushed table stays listed, holding only
    its built-in chains, which is the same as no table at all."""
    kept: list[str] = []
    table: list[str] = []
    for line in (_COUNTERS.sub("", ln) for ln in dump.splitlines()):
        if not line or line.startswith("#"):
            continue
        table.append(line)
        if line == "COMMIT":
            empty = all(ln.startswith(("*", ":")) or ln == "COMMIT" for ln in table) and all(
                ln.split()[1] == "ACCEPT" for ln in table if ln.startswith(":")
            )
            if not empty:
                kept += table
            table = []
    return kept + table


def _tables_in(dump: str) -> set[str]:
    return {ln[1:] for ln in dump.splitlines() if ln.startswith("*")}


def _cgroups() -> list[str]:
    root = Path("/sys/fs/cgroup")
    found = []
    for controller in root.iterdir() if root.is_dir() else ():
        if controller.is_dir():
            found += [str(p) for p in controller.iterdir() if p.is_dir()]
    return sorted(found)


def _netns() -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def mounts_under(*prefixes: str) -> list[str]:
    """Mount points at or below any of `prefixes`, deepest first."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(*prefixes: str) -> None:
    for point in mounts_under(*prefixes):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@dataclass
class HostState:
    """The parts of the host a node changes, as they were before it started."""

    sysctls: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    owner: int = 0  # the process that runs the node, while it runs

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            sysctls=_read_sysctls(),
            tables={f: _save_tables(f) for f in _FAMILIES},
            cgroups=_cgroups(),
            netns=_netns(),
            paths=[p for p in HOST_PATHS if os.path.lexists(p)],
            links=_links(),
        )

    # --- persistence: a node killed halfway is cleaned up by the next start ---------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))

    # --- putting it back ------------------------------------------------------------

    def kill_processes_in_new_cgroups(self) -> int:
        """SIGKILL every process in a cgroup that did not exist before: the containers
        (the kubelet puts every pod under kubepods). Returns how many were signalled."""
        killed = 0
        for top in sorted(set(_cgroups()) - set(self.cgroups)):
            for procs in Path(top).rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), 9)
                            killed += 1
        return killed

    def restore(self) -> None:
        """Undo what a node did: netns, cgroups, created paths, iptables, sysctls.

        Processes must be gone and mounts unmounted first (the caller's job: it knows
        which processes are its own)."""
        for name in sorted(set(_netns()) - set(self.netns)):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        for path in sorted(set(_cgroups()) - set(self.cgroups)):
            _remove_cgroup(Path(path))
        for path in HOST_PATHS:
            if path not in self.paths and os.path.lexists(path):
                unmount_under(path)
                subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
        self._restore_tables()
        self._restore_sysctls()

    def _restore_tables(self) -> None:
        for family, before in self.tables.items():
            now = _save_tables(family)
            if _normalised(now) == _normalised(before):
                continue
            # Tables the snapshot does not list were empty then: empty them again.
            for table in _tables_in(now) - _tables_in(before):
                subprocess.run([family, "-t", table, "-F"], capture_output=True, check=False)
                subprocess.run([family, "-t", table, "-X"], capture_output=True, check=False)
            if before:
                subprocess.run(
                    [f"{family}-restore"],
                    input=before,
                    text=True,
                    capture_output=True,
                    check=False,
                )

    def _restore_sysctls(self) -> None:
        now = _read_sysctls()
        # ip_forward first: writing it resets other per-interface settings
        # (accept_redirects), which are then put back below.
        order = sorted(self.sysctls, key=lambda k: k != "net/ipv4/ip_forward")
        for key in order:
            if now.get(key) != self.sysctls[key]:
                with contextlib.suppress(OSError):
                    (Path("/proc/sys") / key).write_text(self.sysctls[key])

    # --- the guard ------------------------------------------------------------------

    def leftovers(self, *, workdir: Path | None = None) -> list[str]:
        """What still differs from the snapshot: empty when the host is as it was."""
        found: list[str] = []
        now = _read_sysctls()
        found += [
            f"sysctl {k} is {now.get(k)!r}, was {v!r}"
            for k, v in self.sysctls.items()
            if k in now and now[k] != v
        ]
        for family, before in self.tables.items():
            if _normalised(_save_tables(family)) != _normalised(before):
                found.append(f"{family} rules differ from before the node started")
        found += [f"network namespace {n}" for n in sorted(set(_netns()) - set(self.netns))]
        found += [f"cgroup {c}" for c in sorted(set(_cgroups()) - set(self.cgroups))]
        found += [f"path {p}" for p in HOST_PATHS if p not in self.paths and os.path.lexists(p)]
        found += [f"network link {n}" for n in sorted(set(_links()) - set(self.links))]
        prefixes = [*HOST_PATHS, *([str(workdir)] if workdir else [])]
        found += [f"mount {m}" for m in mounts_under(*prefixes)]
        return found


def _links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup tree depth-first (cgroupfs only removes empty directories)."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
