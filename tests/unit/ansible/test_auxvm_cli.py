"""`installer auxvm inventory`: everything a hand run of the play needs, and no secret in it."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from installer.cli.app import main
from tests.fixtures.auxvm import lab_inventory_variant


def test_inventory_for_hand_runs(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90LWEta2V5\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    known = tmp_path / "known_hosts"
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    known.write_text(f"10.213.0.2 {raw.decode()}\n")

    def local(doc: dict[str, Any]) -> None:
        doc["aux_vm"]["ssh"]["private_key"] = f"file:{key}"
        doc["aux_vm"]["ssh"]["known_hosts"] = str(known)

    inventory = lab_inventory_variant(tmp_path, local, own_state=True)
    rc = main(["--log-dir", str(tmp_path / "logs"), "auxvm", "inventory", "-i", str(inventory)])
    assert rc == 0
    state = tmp_path / "state"
    generated = state / "ansible" / "aux-vm.inventory.json"
    doc = json.loads(generated.read_text())
    host = doc["all"]["children"]["aux_vm"]["hosts"]["aux-vm"]
    hub = doc["all"]["children"]["aux_vm"]["vars"]
    assert host["ansible_host"] == "10.213.0.2"
    assert host["ansible_ssh_private_key_file"] == str(key)
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    assert str(state / "ansible" / "aux-vm.known_hosts") in host["ansible_ssh_common_args"]
    assert (state / "ansible" / "aux-vm.known_hosts").read_text() == known.read_text()
    assert hub["hub_tls_ca_cert_file"] == str(state / "pki" / "ca.crt")
    assert hub["hub_dns_enabled"] is True
    for name in ("hub-password", "devpi-root-password"):
        secret = state / "secrets" / name
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_text().strip() not in generated.read_text()
    assert stat.S_IMODE((state / "pki" / "hub.key").stat().st_mode) == 0o600
