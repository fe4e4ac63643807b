"""The SSH engine: paramiko with pinned host keys, for probes before Ansible runs.

Host keys are checked against the inventory's pin (a known_hosts file or a `SHA256:` fingerprint)
with paramiko's `RejectPolicy`: an unknown or changed key is an error, never accepted.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from installer.errors import BadInputError, EnvironmentProblem
from installer.redact import REDACTOR


@dataclass(frozen=True)
class SshTarget:
    """Where to connect and what key the host must present."""

    address: str
    port: int
    user: str
    private_key: str
    """The login key (PEM/OpenSSH text); registered with the redactor."""
    known_hosts: Path | None = None
    fingerprint: str | None = None
    timeout_s: float = 10.0

    @property
    def host_pattern(self) -> str:
        """The name known_hosts uses for this host (`[addr]:port` off port 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    rc: int
    stdout: str
    stderr: str


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...` as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def register_key_text(text: str) -> None:
    """Register a PEM or OpenSSH key's body lines with the redactor (not its BEGIN/END lines,
    which would mask every certificate header too)."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("-----"):
            REDACTOR.register(line)


def _load_private_key(text: str) -> paramiko.PKey:
    register_key_text(text)
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise BadInputError(
        "the SSH private key is not an unencrypted ed25519, ECDSA or RSA key",
        remedy="point aux_vm.ssh.private_key at a key without a passphrase",
    )


def _unreachable(target: SshTarget, step: str, why: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"host {target.address}:{target.port}: {step}: {why}",
        remedy="check that the VM is up, its address and SSH port in the inventory, and that"
        " no firewall blocks the port",
    )


def remote_host_key(target: SshTarget) -> paramiko.PKey:
    """The host key `target` presents (no login, nothing trusted)."""
    try:
        sock = socket.create_connection((target.address, target.port), timeout=target.timeout_s)
    except OSError as exc:
        raise _unreachable(target, "connect", exc.strerror or str(exc)) from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=target.timeout_s)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise _unreachable(target, "SSH handshake", str(exc) or type(exc).__name__) from None
    finally:
        transport.close()


def pinned_known_hosts_line(target: SshTarget) -> str:
    """The one known_hosts line for `target`, after checking the key it presents against the pin.

    With a known_hosts file the pin is that file's entry; with a fingerprint the key is fetched
    and must match. Raises EnvironmentProblem when the host presents another key.
    """
    if target.known_hosts is not None:
        try:
            keys = paramiko.HostKeys(str(target.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise BadInputError(
                f"cannot read known_hosts {target.known_hosts}: {exc}",
                remedy="point aux_vm.ssh.known_hosts at a readable known_hosts file",
            ) from None
        entry = keys.lookup(target.host_pattern) or keys.lookup(target.address)
        if not entry:
            raise BadInputError(
                f"{target.known_hosts} has no key for {target.host_pattern}",
                remedy=f"add the VM's host key: ssh-keyscan -p {target.port} {target.address}"
                " (check its fingerprint with the VM's console first)",
            )
        key = next(iter(entry.values()))
        return f"{target.host_pattern} {key.get_name()} {key.get_base64()}"
    if target.fingerprint is None:
        raise BadInputError(
            "the VM's host key is not pinned",
            remedy="set aux_vm.ssh.known_hosts or aux_vm.ssh.host_key_fingerprint",
        )
    key = remote_host_key(target)
    seen = fingerprint(key)
    if seen.rstrip("=") != target.fingerprint.rstrip("="):
        raise EnvironmentProblem(
            f"host {target.address}:{target.port}: host key verification failed: it presents"
            f" {seen}, the inventory pins {target.fingerprint}",
            remedy="if the VM was rebuilt, check its new key on its console and update"
            " aux_vm.ssh.host_key_fingerprint; otherwise stop: someone may be in the middle",
        )
    return f"{target.host_pattern} {key.get_name()} {key.get_base64()}"


def _login(target: SshTarget, sock: paramiko.Channel | None = None) -> paramiko.SSHClient:
    """An SSH client logged in to `target` with its host key pinned (over `sock` when given)."""
    if sock is not None and target.known_hosts is None:
        raise BadInputError(
            f"host {target.address}: a host reached through another needs a known_hosts pin",
            remedy="give the host's key in a known_hosts file",
        )
    line = pinned_known_hosts_line(target)
    client = paramiko.SSHClient()
    pattern, key_type, key_b64 = line.split(" ", 2)
    pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    client.get_host_keys().add(pattern, key_type, pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            pkey=_load_private_key(target.private_key),
            timeout=target.timeout_s,
            banner_timeout=target.timeout_s,
            auth_timeout=target.timeout_s,
            allow_agent=False,
            look_for_keys=False,
            sock=sock,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise EnvironmentProblem(
            f"host {target.address}:{target.port}: host key verification failed",
            remedy="check the host's key on its console and update the pin in the inventory",
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise EnvironmentProblem(
            f"host {target.address}:{target.port}: login as {target.user} refused",
            remedy="authorize the inventory's SSH key for that user on the host",
        ) from None
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise _unreachable(target, "login", str(exc) or type(exc).__name__) from None
    return client


def _through(jump: paramiko.SSHClient, via: SshTarget, target: SshTarget) -> paramiko.Channel:
    """A TCP channel from the jump host to `target`'s SSH port (what `ssh -J` opens)."""
    transport = jump.get_transport()
    if transport is None:  # pragma: no cover - a logged-in client has a transport
        raise _unreachable(target, f"through {via.address}", "the jump host's session closed")
    try:
        return transport.open_channel(
            "direct-tcpip", (target.address, target.port), ("127.0.0.1", 0),
            timeout=target.timeout_s,
        )  # fmt: skip
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise _unreachable(
            target, f"connect through {via.address}", str(exc) or type(exc).__name__
        ) from None


def run_command(
    target: SshTarget,
    argv: list[str],
    *,
    via: SshTarget | None = None,
    stdin: bytes | None = None,
    timeout_s: float | None = None,
) -> CommandResult:
    """Run `argv` on the host (quoted by the remote shell rules) with strict host keys.

    `via`: a jump host (logged in to with its own pin) through which `target` is reached.
    `stdin`: bytes written to the command's input, which is closed after them.
    `timeout_s`: how long a read of the command's output may wait (default: six times the
    target's connect timeout).
    """
    jump = _login(via) if via is not None else None
    try:
        sock = _through(jump, via, target) if jump is not None and via is not None else None
        client = _login(target, sock)
        try:
            wait = timeout_s if timeout_s is not None else target.timeout_s * 6
            given, stdout, stderr = client.exec_command(shlex.join(argv), timeout=wait)
            if stdin is not None:
                given.write(stdin)
            given.channel.shutdown_write()
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            return CommandResult(stdout.channel.recv_exit_status(), out, err)
        finally:
            client.close()
    finally:
        if jump is not None:
            jump.close()
