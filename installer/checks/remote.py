"""Commands on a remote host over SSH, for the checks: strict host keys, argv lists.

Kept small and private to the checks until the shared SSH engine (`installer/engines/ssh.py`)
lands; then `SshHost` becomes a thin use of it. Host keys are pinned by the inventory (a
`known_hosts` file or a `SHA256:` fingerprint); an unknown or changed key is refused, never added.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from installer.checks.gpu import CommandResult
from installer.errors import BadInputError, EnvironmentProblem
from installer.inventory.models import SshAccess

log = logging.getLogger("installer.checks.ssh")
CONNECT_TIMEOUT_S = 10.0
_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...` as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyMismatch(EnvironmentProblem):
    """The host presented a key the inventory does not pin."""


class _PinnedFingerprint(paramiko.MissingHostKeyPolicy):
    """Accept exactly the host key whose fingerprint the inventory pins; refuse any other."""

    def __init__(self, expected: str) -> None:
        self.expected = expected.rstrip("=")

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        seen = fingerprint(key)
        if not hmac.compare_digest(seen, self.expected):
            raise HostKeyMismatch(
                f"{hostname} presented host key {seen}, the inventory pins {self.expected}",
                remedy="if the host was reinstalled, confirm the new key out of band and update"
                " host_key_fingerprint; otherwise someone is in the way",
            )


def _private_key(access: SshAccess) -> paramiko.PKey:
    text = access.private_key.resolve().get_secret_value()
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text + "\n"))
        except (paramiko.SSHException, ValueError):
            continue
    raise BadInputError(
        f"ssh private key {access.private_key} is not an unencrypted ed25519, ECDSA or RSA key",
        remedy="point ssh.private_key at an OpenSSH private key without a passphrase",
    )


@dataclass
class SshHost:
    """A host reached over SSH; runs argv lists. One connection, opened on first use."""

    address: str
    access: SshAccess
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    _client: paramiko.SSHClient | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def where(self) -> str:
        """`user@address:port` for messages."""
        return f"{self.access.user}@{self.address}:{self.access.port}"

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.access.known_hosts is not None:
            path = Path(self.access.known_hosts)
            if not path.is_file():
                raise BadInputError(
                    f"known_hosts file {path} does not exist",
                    remedy="point ssh.known_hosts at a file holding the host's key",
                )
            client.load_host_keys(str(path))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        elif self.access.host_key_fingerprint is not None:
            client.set_missing_host_key_policy(_PinnedFingerprint(self.access.host_key_fingerprint))
        else:  # the inventory model requires one of them; never fall back to trusting
            raise BadInputError(f"no pinned host key for {self.address}")
        key = _private_key(self.access)
        try:
            client.connect(
                self.address,
                port=self.access.port,
                username=self.access.user,
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
            )
        except HostKeyMismatch:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"{self.address} presented host key {fingerprint(exc.key)}, which is not the"
                " key pinned in known_hosts",
                remedy="if the host was reinstalled, confirm the new key out of band and"
                " update known_hosts; otherwise someone is in the way",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise EnvironmentProblem(
                f"{self.where} refused the key {self.access.private_key}",
                remedy="add the public key to the user's ~/.ssh/authorized_keys on the host",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            message = str(exc)
            if "not found in known_hosts" in message:
                raise HostKeyMismatch(
                    f"{self.address}: its host key is not in {self.access.known_hosts}",
                    remedy="add the host's key to known_hosts after confirming it out of band",
                ) from None
            raise EnvironmentProblem(
                f"ssh to {self.where} failed: {message}",
                remedy="check that sshd runs on the host and the port is right",
            ) from None
        except OSError as exc:
            client.close()
            raise EnvironmentProblem(
                f"cannot reach {self.where}: {exc.strerror or exc}",
                remedy="check the address, routing and firewalls between here and the host",
            ) from None
        log.info("ssh connected to %s", self.where)
        return client

    def client(self) -> paramiko.SSHClient:
        """The open connection (connecting on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        """Run `argv` on the host; each part quoted, never a shell line built from data."""
        command = shlex.join(argv)
        log.debug("ssh %s: %s", self.where, command)
        try:
            _, stdout, stderr = self.client().exec_command(command, timeout=timeout_s)
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            rc = stdout.channel.recv_exit_status()
        except (paramiko.SSHException, OSError) as exc:
            raise EnvironmentProblem(
                f"ssh {self.where}: {argv[0]} did not complete: {exc}",
                remedy="check the host's load and the connection",
            ) from None
        return CommandResult(rc, out, err)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
