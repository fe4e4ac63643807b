"""The lab's VM host: its own network identity, reached only over SSH with pinned host keys."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import uuid
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.lab import Lab, read_versions

pytestmark = pytest.mark.e2e


def connect(lab: Lab, known_hosts: Path) -> paramiko.SSHClient:
    """Connect as the lab user, trusting only the host keys in `known_hosts`."""
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(str(known_hosts))
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(
        lab.vm_addr,
        port=lab.vm_ssh_port,
        username=lab.vm_user,
        key_filename=str(lab.vm_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return ssh


def run(ssh: paramiko.SSHClient, command: str) -> tuple[int, str]:
    """Run a command on the VM; exit status and stdout."""
    _, stdout, _ = ssh.exec_command(command, timeout=30)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def in_vm(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv inside the VM's network namespace, from the host."""
    return subprocess.run(
        ["ip", "netns", "exec", lab.vm_netns, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_ssh_with_strict_host_keys_reaches_a_sudo_user_with_python(lab: Lab) -> None:
    ssh = connect(lab, lab.vm_known_hosts)
    try:
        assert run(ssh, "id -un") == (0, f"{lab.vm_user}\n")
        assert run(ssh, "sudo -n id -u") == (0, "0\n")
        assert run(ssh, "python3 -c 'import sys; print(sys.version_info[0])'") == (0, "3\n")
    finally:
        ssh.close()


def test_host_key_fingerprint_in_state_matches_the_server(lab: Lab) -> None:
    ssh = connect(lab, lab.vm_known_hosts)
    try:
        transport = ssh.get_transport()
        assert transport is not None
        key = transport.get_remote_server_key()
    finally:
        ssh.close()
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    assert lab.vm_host_key_fingerprint == f"SHA256:{digest}"
    assert key.get_name() == "ssh-ed25519"


def test_wrong_known_hosts_entry_is_refused(lab: Lab, tmp_path: Path) -> None:
    impostor = paramiko.Ed25519Key.from_private_key_file(str(lab.vm_key))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{lab.vm_addr} ssh-ed25519 {impostor.get_base64()}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(lab, known_hosts)


def test_unknown_host_is_refused(lab: Lab, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(lab, known_hosts)


def test_password_login_is_refused(lab: Lab) -> None:
    transport = paramiko.Transport((lab.vm_addr, lab.vm_ssh_port))
    try:
        transport.connect()
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(lab.vm_user, "labops")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_sshd_listens_only_on_the_vm_lab_address(lab: Lab) -> None:
    # Services the installer puts on the VM may listen too; only sshd's sockets matter here.
    listeners = in_vm(lab, "ss", "-Hltnp")
    assert listeners.returncode == 0, listeners.stderr
    sshd = {line.split()[3] for line in listeners.stdout.splitlines() if '"sshd"' in line}
    assert sshd == {f"{lab.vm_addr}:{lab.vm_ssh_port}"}
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        "sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))))\n"
    )
    refused = in_vm(lab, "python3", "-c", probe, str(lab.vm_ssh_port))
    assert refused.returncode != 0, "the VM's sshd answers on 127.0.0.1"


def test_vm_has_its_own_network_identity(lab: Lab) -> None:
    addrs = in_vm(lab, "ip", "-4", "-o", "addr", "show")
    assert addrs.returncode == 0, addrs.stderr
    inet = sorted(line.split()[3] for line in addrs.stdout.splitlines())
    # Its own address and loopback, and the end of its link to the lab's node host (which
    # lab/components/25-node.sh adds while the node runs).
    versions = read_versions()
    assert inet == sorted(
        [
            f"{lab.vm_addr}/{versions['LAB_VM_PREFIX']}",
            "127.0.0.1/8",
            f"{versions['LAB_NODE_VM_LINK_ADDR']}/30",
        ]
    )
    routes = in_vm(lab, "ip", "-4", "route", "show")
    # No default route: the VM reaches the host over the veth pair and nothing beyond it.
    assert "default" not in routes.stdout


def test_what_is_written_on_the_vm_stays_on_the_vm(lab: Lab) -> None:
    """The VM's root file system is its own image beneath a disk of the VM's own: a file root
    writes in the VM's /etc, /opt and /var is on that disk and nowhere on this machine."""
    mark = f"onprem-lab-vm-test-{uuid.uuid4().hex[:8]}"
    places = [f"/etc/{mark}", f"/opt/{mark}", f"/var/lib/{mark}"]
    try:
        lab.vm_run(f"for p in {' '.join(places)}; do echo vm | sudo -n tee $p >/dev/null; done")
        assert lab.vm_run(f"cat {places[0]}").stdout == b"vm\n"
        for place in places:
            assert not Path(place).exists(), f"{place} written on the VM is on this machine"
            assert (lab.state / "vm" / "disk" / "upper" / place.lstrip("/")).is_file()
        assert lab.vm_run("findmnt -no FSTYPE /").stdout.strip() == b"overlay"
    finally:
        lab.vm_run(f"sudo -n rm -f {' '.join(places)}")
