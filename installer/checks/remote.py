"""Commands on a remote host for the checks, through the SSH engine (strict host keys, argv).

`SshHost` adapts the engine to the `CommandRunner` shape the checks use, so the checks' logic
is tested against recorded outputs at that one seam.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from installer.checks.gpu import CommandResult
from installer.engines import ssh
from installer.inventory.models import NodeSsh, SshAccess

log = logging.getLogger("installer.checks.ssh")
CONNECT_TIMEOUT_S = 10.0
fingerprint = ssh.fingerprint


@dataclass
class SshHost:
    """A host reached over SSH with the inventory's access; runs argv lists."""

    address: str
    access: SshAccess | NodeSsh
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    via: SshHost | None = None
    """A jump host the connection goes through (`node_ssh.jump: aux-vm`)."""

    @property
    def where(self) -> str:
        """`user@address:port` for messages (`... via user@vm:port` through a jump host)."""
        here = f"{self.access.user}@{self.address}:{self.access.port}"
        return here if self.via is None else f"{here} via {self.via.where}"

    def target(self) -> ssh.SshTarget:
        """The engine's view of this host (reads the key reference now)."""
        return ssh.SshTarget(
            address=self.address,
            port=self.access.port,
            user=self.access.user,
            private_key=self.access.private_key.resolve().get_secret_value(),
            known_hosts=Path(self.access.known_hosts) if self.access.known_hosts else None,
            fingerprint=(
                self.access.host_key_fingerprint if isinstance(self.access, SshAccess) else None
            ),
            timeout_s=self.connect_timeout_s,
        )

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        """Run `argv` on the host (the engine quotes each part; no shell line is built)."""
        log.debug("ssh %s: %s", self.where, argv)
        via = self.via.target() if self.via is not None else None
        result = ssh.run_command(self.target(), argv, via=via)
        return CommandResult(result.rc, result.stdout, result.stderr)

    def close(self) -> None:
        """Nothing stays open: the engine connects per command."""
