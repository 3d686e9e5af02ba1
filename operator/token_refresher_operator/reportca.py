"""The CA that injected sidecars trust for `/report`, when the configuration names none.

With `tls.mode: cert-manager` the chart cannot know the CA when it renders (cert-manager
makes it later), so `report.caBundle` is empty and the operator takes the `ca.crt` that
cert-manager writes into the TLS Secret, mounted beside the serving certificate. The
Secret is renewed in place (the kubelet swaps a symlink), so the file is looked at again
on every injection and re-read when it changed: pods created after a renewal trust the
new CA. Without it sidecars could not verify the report endpoint and would never report.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["CA_FILE_NAME", "ReportCA"]

logger = logging.getLogger(__name__)

CA_FILE_NAME = "ca.crt"  # cert-manager's key in the Secret, and so the file's name
_PEM_MARK = "-----BEGIN CERTIFICATE-----"


class ReportCA:
    """PEM of `path`, re-read when the file changes; "" while it is missing or not PEM."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._pem = ""
        self._problem: str | None = None

    @classmethod
    def beside(cls, cert_file: Path) -> ReportCA:
        """The `ca.crt` in the directory of the serving certificate."""
        return cls(cert_file.parent / CA_FILE_NAME)

    def pem(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                text = self.path.read_text(encoding="ascii")
                if _PEM_MARK not in text:
                    raise ValueError("no PEM certificate in it")
                if self._stamp is not None:
                    logger.info("report CA %s changed: new pods trust the new one", self.path)
                self._pem, self._stamp, self._problem = text, stamp, None
        except (OSError, ValueError) as exc:
            # Keep what was read before (a renewal half-written); say so once per cause.
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._problem:
                self._problem = problem
                logger.warning(
                    "cannot read the report CA %s (%s): %s",
                    self.path,
                    problem,
                    "injecting with the previous one"
                    if self._pem
                    else "injected sidecars cannot verify /report and will not report failures",
                )
        return self._pem
