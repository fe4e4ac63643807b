"""Host key pins read by the SSH engine: known_hosts entries and fingerprints, never trust on
first use."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from installer.engines.ssh import SshTarget, fingerprint, pinned_known_hosts_line
from installer.errors import BadInputError


def _public_line(tmp_path: Path) -> tuple[str, Path]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    pub = tmp_path / "host.pub"
    pub.write_text(line + "\n")
    return line, pub


def _target(known: Path | None, port: int = 22, fp: str | None = None) -> SshTarget:
    return SshTarget("10.9.8.7", port, "ops", private_key="", known_hosts=known, fingerprint=fp)


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    line, pub = _public_line(tmp_path)
    key = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(line.split()[1]))
    keygen = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True
    )
    assert keygen.returncode == 0, keygen.stderr
    assert fingerprint(key) == keygen.stdout.split()[1]


@pytest.mark.parametrize(("port", "pattern"), [(22, "10.9.8.7"), (2222, "[10.9.8.7]:2222")])
def test_known_hosts_entry_is_the_pin(tmp_path: Path, port: int, pattern: str) -> None:
    line, _ = _public_line(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"other.example {line}\n{pattern} {line}\n")
    assert pinned_known_hosts_line(_target(known, port)) == f"{pattern} {line}"


def test_host_missing_from_known_hosts_is_bad_input(tmp_path: Path) -> None:
    line, _ = _public_line(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"10.9.8.6 {line}\n")
    with pytest.raises(BadInputError, match=r"has no key for 10\.9\.8\.7") as caught:
        pinned_known_hosts_line(_target(known))
    assert caught.value.remedy and "ssh-keyscan" in caught.value.remedy


def test_no_pin_at_all_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="not pinned"):
        pinned_known_hosts_line(_target(None))
