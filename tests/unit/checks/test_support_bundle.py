"""The support bundle: what it holds, and that no secret value is anywhere inside it."""

from __future__ import annotations

import json
import os
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from installer.checks.support_bundle import gather
from installer.inventory import load_inventory

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "inventories" / "onprem.example.yml"


def _run(logs: Path, name: str, files: dict[str, str], mtime: float) -> Path:
    run = logs / name
    run.mkdir(parents=True)
    for rel, text in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
        os.utime(run / rel, (mtime, mtime))
    os.utime(run, (mtime, mtime))
    return run


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A site whose inventory references an SSH key file, a Keycloak password in the environment
    and a CA key that is not readable here; its state folder holds a generated hub password; its
    logs, events, reports and journal all leak those values, as a careless tool might."""
    tag = secrets.token_hex(6)
    values = {
        "ssh key": f"b3BlbnNzaC1rZXktdjEAAAAA{tag}key",
        "keycloak password": f"kc-admin-{tag}",
        "hub password": f"hub-pass-{tag}",
    }
    key = tmp_path / "keys" / "hub_ed25519"
    key.parent.mkdir()
    key.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{values['ssh key']}\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    monkeypatch.setenv(f"CHK_KC_{tag.upper()}", values["keycloak password"])
    monkeypatch.delenv(f"CHK_CA_{tag.upper()}", raising=False)
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    (state / "secrets" / "hub-password").write_text(values["hub password"] + "\n")
    leak = " ".join(values.values())
    (state / "journal.json").write_text(json.dumps({"phases": {"auxvm": {"note": leak}}}))
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")

    data = yaml.safe_load(EXAMPLE.read_text())
    data["site"]["state_dir"] = str(state)
    data["aux_vm"]["ssh"]["private_key"] = f"file:{key}"
    data["aux_vm"]["tls"] = {
        "ca": "provided",
        "ca_cert": str(ca),
        "ca_key": f"env:CHK_CA_{tag.upper()}",
    }
    cluster = data["clusters"][0]
    cluster["kubeconfig"] = str(tmp_path / "kubeconfig")
    (tmp_path / "kubeconfig").write_text("not a kubeconfig\n")
    cluster["keycloak"]["admin_password"] = f"env:CHK_KC_{tag.upper()}"
    inventory = tmp_path / "site.yml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))

    logs = tmp_path / "runs"
    report = json.dumps({"ok": False, "results": [{"id": "vm.ssh", "message": leak}]})
    _run(logs, "20260101T000000Z-verify-1", {"verify-report.json": report}, 1_000_000)
    _run(
        logs,
        "20260102T000000Z-bootstrap-2",
        {
            "installer.log": f"INFO login to the hub with {leak}\n",
            "events.jsonl": json.dumps({"event": "task", "stdout": leak}) + "\n",
            "preflight-report.json": report,
            "ansible/env/ssh_key": key.read_text(),
        },
        2_000_000,
    )
    return {"inventory": inventory, "logs": logs, "values": values, "tag": tag}


def test_no_secret_value_is_anywhere_in_the_bundle(site: dict[str, Any], tmp_path: Path) -> None:
    inventory = load_inventory(site["inventory"])
    bundle = gather(inventory, site["inventory"], site["logs"], runs=1)
    path = bundle.write(tmp_path / "support.tar.gz")
    with tarfile.open(path) as tar:
        members = {
            m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }
    assert len(members) >= 6
    for name, text in members.items():
        for what, value in site["values"].items():
            assert value not in text, f"the {what} is in {name}"
    # what was leaked is still there, masked
    log = members["support/runs/20260102T000000Z-bootstrap-2/installer.log"]
    assert log == "INFO login to the hub with *** *** ***\n"
    assert "***" in members["support/journal.json"]
    assert "    private_key: ***" in members["support/inventory.yml"]
    # a reference that cannot be read is named (never a value), so support knows it is unmasked
    notes = members["support/NOTES.txt"]
    assert f"not masked if a log holds them: env:CHK_CA_{site['tag'].upper()}" in notes


def test_bundle_holds_logs_events_reports_journal_versions_nodes(
    site: dict[str, Any], tmp_path: Path
) -> None:
    inventory = load_inventory(site["inventory"])
    bundle = gather(inventory, site["inventory"], site["logs"], runs=1)
    names = set(bundle.members)
    run = "runs/20260102T000000Z-bootstrap-2"
    assert {f"{run}/installer.log", f"{run}/events.jsonl", f"{run}/preflight-report.json"} <= names
    assert not any(n.startswith("runs/20260101T000000Z-verify-1") for n in names)  # runs=1
    # the newest reports even when the run that made them is older than the runs kept
    assert {"reports/preflight-report.json", "reports/verify-report.json"} <= names
    assert {"journal.json", "versions.json", "inventory.yml"} <= names
    assert f"{run}/ansible/env/ssh_key" not in names
    versions = json.loads(bundle.members["versions.json"])
    assert versions["installer"] and versions["python"] and "pydantic" in versions["packages"]
    # the node summary needs the cluster: here its kubeconfig is broken, and NOTES says so
    assert any(n.startswith("cluster prod: no node summary") for n in bundle.notes)
