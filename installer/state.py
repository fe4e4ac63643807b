"""The installer's state folder on the operator's machine (`site.state_dir` of the inventory).

Layout, shared by every phase:

    <state_dir>/
      pki/ca.crt, pki/ca.key        site CA (generated once unless the inventory provides one)
      secrets/<name>                generated secrets, one per file, mode 0600
      journal.json                  phase outcomes (never a secret)
      pulumi/                       Pulumi file backend and passphrase
      runs/                         run folders (logs, events, artifacts)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from installer.errors import EnvironmentProblem
from installer.redact import REDACTOR

HUB_USER = "installer"
"""Login the installer creates on each hub service (registry, ChartMuseum, DevPI): it pushes and
deletes, on the services' push ports."""
HUB_PASSWORD_SECRET = "hub-password"  # noqa: S105 - the name of a secret file, not a value
"""The state folder's secret holding `HUB_USER`'s password."""
HUB_PULL_USER = "cluster-pull"
"""The read-only login the clusters use (image pull secrets, chart reads): the registry and
ChartMuseum know it only on their read-only endpoints, which refuse every write."""
HUB_PULL_PASSWORD_SECRET = "hub-pull-password"  # noqa: S105 - a secret file's name
"""The state folder's secret holding `HUB_PULL_USER`'s password."""


@dataclass(frozen=True)
class StateDir:
    """Paths inside the state folder, and the generated secrets kept there."""

    root: Path

    @property
    def pki(self) -> Path:
        """Site CA and certificates."""
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        """The site CA certificate (PEM), what clients trust."""
        return self.pki / "ca.crt"

    @property
    def secrets(self) -> Path:
        """Generated secrets, 0600 files in a 0700 folder."""
        return self.root / "secrets"

    @property
    def journal(self) -> Path:
        """The run journal."""
        return self.root / "journal.json"

    @property
    def pulumi(self) -> Path:
        """Pulumi's file backend and passphrase."""
        return self.root / "pulumi"

    def secret(self, name: str, *, length: int = 32) -> SecretStr:
        """The generated secret `name`, created once (0600) and re-used on every later run."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad secret name {name!r}")
        path = self.secrets / name
        try:
            self.secrets.mkdir(parents=True, mode=0o700, exist_ok=True)
            if not path.exists():
                value = secrets.token_urlsafe(length)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(value + "\n")
            value = path.read_text(encoding="utf-8").strip()
        except FileExistsError:  # another process created it between exists() and open()
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot keep secret {name} in {self.secrets}: {exc.strerror or exc}",
                remedy="make site.state_dir writable by the installer user",
            ) from None
        REDACTOR.register(value)
        return SecretStr(value)
