"""Bad input and faults of the auxvm phase against the lab VM: each run ends with the right exit
code and a message naming the host, the step and the remedy, and changes nothing on the VM."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from installer.engines.ssh import CommandResult, SshTarget, run_command
from tests.fixtures.auxvm import (
    LAB_INVENTORY,
    Hub,
    LabVm,
    bootstrap_auxvm,
    hub_unit,
    lab_inventory_variant,
    listener_on_vm,
    run_installer,
    systemctl,
)
from tests.fixtures.lab import LAB_DIR, REPO

pytestmark = pytest.mark.e2e


def _other_host_key() -> str:
    """An ed25519 public key that is not the VM's, in known_hosts form."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode()


def _on_vm(hub: Hub, argv: list[str]) -> CommandResult:
    """Run `argv` on the VM over SSH (strict host key), as an operator would."""
    target = SshTarget(
        address=hub.vm.address,
        port=hub.vm.ssh_port,
        user=hub.vm.user,
        private_key=hub.vm.key.read_text(),
        known_hosts=hub.vm.known_hosts,
    )
    return run_command(target, argv)


def _recorded(hub: Hub) -> tuple[str, str]:
    """How the lab state's journal records the auxvm phase and the bootstrap."""
    journal = json.loads((hub.state / "journal.json").read_text())
    return journal["phases"]["auxvm"]["state"], journal["bootstrap"]


def test_wrong_host_key_is_refused(provisioned_hub: Hub, tmp_path: Path) -> None:
    """Refused even right after a run with the right key (no SSH master connection reused).

    `installer plan` (check mode) takes the same path as bootstrap to the VM and cannot change
    it, should the pin ever be bypassed: the lab VM is shared."""
    lab_vm = provisioned_hub.vm
    known = tmp_path / "known_hosts"
    known.write_text(f"{lab_vm.address} {_other_host_key()}\n")

    def pin(doc: dict[str, Any]) -> None:
        doc["aux_vm"]["ssh"]["known_hosts"] = str(known)

    inventory = lab_inventory_variant(tmp_path, pin, own_state=True)
    run = run_installer(
        ["plan", "-i", str(inventory), "--only", "auxvm", "-o", "json"],
        tmp_path / "logs",
        provisioned_hub.env,
    )
    assert run.rc == 3, run.stdout[-2000:]
    error = run.final()["error"]
    assert f"{lab_vm.user}@{lab_vm.address}:22" in error["message"]
    assert (
        f"host key verification failed: the host presents {lab_vm.fingerprint}" in error["message"]
    )
    assert "step '" in error["message"]
    assert "host key" in error["remedy"]


def test_wrong_host_key_fingerprint_is_refused(
    lab_vm: LabVm, hub_sources: dict[str, str], tmp_path: Path
) -> None:
    wrong = "SHA256:" + base64.b64encode(b"\x00" * 32).decode().rstrip("=")

    def pin(doc: dict[str, Any]) -> None:
        del doc["aux_vm"]["ssh"]["known_hosts"]
        doc["aux_vm"]["ssh"]["host_key_fingerprint"] = wrong

    inventory = lab_inventory_variant(tmp_path, pin, own_state=True)
    run = bootstrap_auxvm(inventory, tmp_path / "logs", hub_sources)
    assert run.rc == 3, run.stdout[-2000:]
    error = run.final()["error"]
    assert lab_vm.fingerprint in error["message"]
    assert wrong in error["message"]
    assert "host_key_fingerprint" in error["remedy"]


def test_unreachable_vm_is_an_environment_problem(
    lab_vm: LabVm, hub_sources: dict[str, str], tmp_path: Path
) -> None:
    closed = 2222  # nothing listens there in the VM
    key = lab_vm.known_hosts.read_text().split(maxsplit=1)[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{lab_vm.address}]:{closed} {key}")

    def move(doc: dict[str, Any]) -> None:
        doc["aux_vm"]["ssh"]["port"] = closed
        doc["aux_vm"]["ssh"]["known_hosts"] = str(known)

    inventory = lab_inventory_variant(tmp_path, move, own_state=True)
    run = bootstrap_auxvm(inventory, tmp_path / "logs", hub_sources)
    assert run.rc == 3, run.stdout[-2000:]
    error = run.final()["error"]
    assert f"host {lab_vm.user}@{lab_vm.address}:{closed} unreachable at step" in error["message"]
    assert "Connection refused" in error["message"]
    assert "VM is up" in error["remedy"]


@pytest.fixture
def squatter(lab_vm: LabVm) -> Iterator[int]:
    """Another program listening on a port of the VM."""
    with listener_on_vm(lab_vm, 15999) as port:
        yield port


def test_port_taken_on_the_vm_fails_before_any_change(
    provisioned_hub: Hub, squatter: int, tmp_path: Path
) -> None:
    hub = provisioned_hub
    config = f"/etc/systemd/system/{hub_unit('chartmuseum')}"
    before = _on_vm(hub, ["sudo", "-n", "cat", config]).stdout

    def move(doc: dict[str, Any]) -> None:
        doc["aux_vm"].setdefault("services", {})["chartmuseum"] = {
            "port": squatter,
            "data_path": "/var/lib/onprem-hub/charts",
        }

    inventory = lab_inventory_variant(tmp_path, move, own_state=False)
    run = bootstrap_auxvm(inventory, tmp_path / "logs", hub.env)
    assert run.rc == 1, run.stdout[-2000:]
    error = run.final()["error"]
    assert f"port {squatter} on aux-vm is taken by another program (python3)" in error["message"]
    assert "step 'Refuse ports held by other programs'" in error["message"]
    assert "aux_vm.services.chartmuseum.port" in error["remedy"]
    # Nothing moved: ChartMuseum still answers where it was.
    assert _on_vm(hub, ["sudo", "-n", "cat", config]).stdout == before
    trust = ssl.create_default_context(cafile=str(hub.ca_cert))
    answer = httpx.get(f"https://{hub.address}:8080/index.yaml", verify=trust)
    assert answer.status_code == 401


@pytest.fixture
def sudo_taken_away(provisioned_hub: Hub, tmp_path: Path) -> Iterator[None]:
    """The VM's SSH user without its sudo rule: moved aside inside the VM, and back, as root at
    the VM's console (`lab/components/20-vm.sh root`: the VM has a root file system of its own);
    the VM's next boot writes the rule again should this test be killed."""
    rule = "/etc/sudoers.d/90-lab-user"
    aside = "/root/90-lab-user.aside"
    vm_root(["test", "-f", rule])
    vm_root(["mv", rule, aside])
    try:
        yield
    finally:
        vm_root(["mv", aside, rule])


def vm_root(argv: list[str]) -> None:
    """Run argv as root inside the lab VM, from this machine (not over SSH)."""
    done = subprocess.run(
        ["bash", str(LAB_DIR / "components" / "20-vm.sh"), "root", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv} as root on the VM: {done.stderr[-2000:]}"


def test_no_sudo_is_an_environment_problem(
    provisioned_hub: Hub, sudo_taken_away: None, tmp_path: Path
) -> None:
    hub = provisioned_hub
    refused = _on_vm(hub, ["sudo", "-n", "true"])
    assert refused.rc != 0, "sudo still works: the fault was not set up"
    run = bootstrap_auxvm(LAB_INVENTORY, tmp_path / "logs", hub.env)
    assert run.rc == 3, run.stdout[-2000:]
    error = run.final()["error"]
    assert f"host {hub.vm.user}@{hub.address}:22: step '" in error["message"]
    assert f"{hub.vm.user} cannot use sudo" in error["message"]
    assert "passwordless sudo" in error["remedy"]
    assert "hub ready" not in run.stdout
    assert _recorded(hub) == ("failed", "failed")


@pytest.fixture
def small_disk(provisioned_hub: Hub) -> Iterator[str]:
    """A 16 MiB file system mounted on the VM (through the VM's own mount namespace)."""
    # Under /mnt: an inventory refuses data paths in /tmp and /var/tmp (cleared on reboot).
    mount = f"/mnt/onprem-hub-small-{uuid.uuid4().hex[:8]}"
    made = _on_vm(provisioned_hub, ["sudo", "-n", "mkdir", "-p", mount])
    assert made.rc == 0, made.stderr
    mounted = _on_vm(
        provisioned_hub,
        ["sudo", "-n", "mount", "-t", "tmpfs", "-o", "size=16m", "onprem-hub-small", mount],
    )
    try:
        assert mounted.rc == 0, mounted.stderr
        yield mount
    finally:
        if mounted.rc == 0:
            gone = _on_vm(provisioned_hub, ["sudo", "-n", "umount", mount])
            assert gone.rc == 0, gone.stderr
        _on_vm(provisioned_hub, ["sudo", "-n", "rmdir", mount])


def test_disk_too_small_fails_before_any_change(
    provisioned_hub: Hub, small_disk: str, tmp_path: Path
) -> None:
    hub = provisioned_hub
    config = "/etc/onprem-hub/registry/config.yml"
    before = _on_vm(hub, ["sudo", "-n", "cat", config]).stdout
    assert before, config
    data = f"{small_disk}/registry"

    def move(doc: dict[str, Any]) -> None:
        doc["aux_vm"].setdefault("services", {})["registry"] = {"port": 5000, "data_path": data}

    inventory = lab_inventory_variant(tmp_path, move, own_state=False)
    run = bootstrap_auxvm(inventory, tmp_path / "logs", hub.env)
    assert run.rc == 1, run.stdout[-2000:]
    error = run.final()["error"]
    assert (
        f"host {hub.vm.user}@{hub.address}:22: step 'Refuse data paths without room'"
        in (error["message"])
    )
    assert f"{data} on aux-vm has 16.00 MB free; registry needs 10.00 GB" in error["message"]
    assert "aux_vm.services.registry.data_path" in error["remedy"]
    assert _recorded(hub) == ("failed", "failed")
    # Nothing moved: the registry keeps its configuration and data path, and answers.
    assert _on_vm(hub, ["sudo", "-n", "cat", config]).stdout == before
    assert _on_vm(hub, ["sudo", "-n", "test", "-e", data]).rc != 0
    trust = ssl.create_default_context(cafile=str(hub.ca_cert))
    assert httpx.get(f"https://{hub.address}:5000/v2/", verify=trust).status_code == 401


def test_ansible_only_operators_use_the_generated_inventory(
    provisioned_hub: Hub, tmp_path: Path
) -> None:
    """`installer auxvm inventory`, then `ansible-playbook -i <that inventory>
    playbooks/aux-vm.yml` without the installer: a real run finds nothing to change on the
    converged hub; a data path without room stops a check-mode run."""
    written = run_installer(
        ["auxvm", "inventory", "-i", str(LAB_INVENTORY), "-o", "json"],
        tmp_path / "inventory-logs",
        provisioned_hub.env,
    )
    assert written.rc == 0, written.stdout[-2000:] + written.stderr[-2000:]
    generated = Path(written.final()["inventory"]).resolve()
    assert generated == (provisioned_hub.state / "ansible" / "aux-vm.inventory.json").resolve()
    playbook = REPO / "playbooks" / "aux-vm.yml"
    assert Path(written.final()["playbook"]) == playbook
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["ANSIBLE_NOCOLOR"] = "1"

    def play(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ansible-playbook", "-i", str(generated), str(playbook), *extra],
            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
        )  # fmt: skip

    real = play()
    assert real.returncode == 0, real.stdout[-3000:]
    assert "changed=0" in real.stdout and "failed=0" in real.stdout, real.stdout[-3000:]
    # Check mode by hand: stopped by the free-space check (the installer's own check-mode runs
    # are its plans, tested with drift above and in the e2e sites).
    full = play("--check", "-e", "hub_registry_min_free=1125899906842624")
    assert full.returncode == 2
    assert "/var/lib/onprem-hub/registry on aux-vm has" in full.stdout
    assert "registry needs 1.00 PB" in full.stdout
    assert "remedy: grow that file system" in full.stdout


def test_plan_shows_drift_and_apply_heals_it(provisioned_hub: Hub, tmp_path: Path) -> None:
    """Drift of each kind the probe reads: a file edited, a program stopped, a data folder given
    to another owner. The probe sees each, the check-mode play names the tasks, the play heals,
    and the next plan is the probe's alone (the play does not run)."""
    hub = provisioned_hub
    drifted = "/etc/onprem-hub/dns/dnsmasq.conf"
    charts = "/var/lib/onprem-hub/charts"
    # Converged first (a probe record of the converged VM exists after it).
    first = bootstrap_auxvm(LAB_INVENTORY, tmp_path / "first-logs", hub.env)
    assert first.rc == 0, first.stdout[-2000:] + first.stderr[-2000:]
    try:
        _drift_plan_heal(hub, tmp_path, drifted, charts)
    finally:
        # Whatever failed above, the session's hub is left converged for the next tests.
        assert bootstrap_auxvm(LAB_INVENTORY, tmp_path / "last-logs", hub.env).rc == 0


def _drift_plan_heal(hub: Hub, tmp_path: Path, drifted: str, charts: str) -> None:
    for argv in (
        ["sudo", "-n", "sed", "-i", "$ a address=/drift.example/10.9.9.9", drifted],
        systemctl("stop", "chartmuseum"),
        ["sudo", "-n", "chown", "root", charts],
    ):
        done = _on_vm(hub, argv)
        assert done.rc == 0, done.stderr
    # `bootstrap --dry-run`: the plan's check-mode run, reported by bootstrap, changing nothing
    # (`plan` itself runs the same code; it ends this test).
    dry = run_installer(
        ["bootstrap", "-i", str(LAB_INVENTORY), "--only", "auxvm", "--restart", "--dry-run",
         "-o", "json"],
        tmp_path / "dry-logs", hub.env,
    )  # fmt: skip
    assert dry.rc == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert dry.final()["dry_run"] is True
    (auxvm,) = dry.final()["phases"]
    names = [c["name"] for c in auxvm["changes"]]
    assert {"Write the zone configuration", "Create the chart folder"} <= set(names), names
    notes = " ".join(auxvm["notes"])
    for item in ("tree:/etc/onprem-hub", "program:chartmuseum", f"dir:{charts}"):
        assert item in notes, notes
    assert "drift.example" in _on_vm(hub, ["sudo", "-n", "cat", drifted]).stdout, "dry run changed"
    healed = bootstrap_auxvm(LAB_INVENTORY, tmp_path / "heal-logs", hub.env)
    assert healed.rc == 0
    assert healed.phase_changes() >= 3
    assert "drift.example" not in _on_vm(hub, ["sudo", "-n", "cat", drifted]).stdout
    running = _on_vm(hub, ["systemctl", "is-active", hub_unit("chartmuseum")])
    assert running.stdout.strip() == "active", running.stdout
    assert _on_vm(hub, ["sudo", "-n", "stat", "-c", "%U", charts]).stdout.strip() == "onprem-hub"
    quiet = run_installer(
        ["plan", "-i", str(LAB_INVENTORY), "--only", "auxvm", "--expect-no-changes", "-o", "json"],
        tmp_path / "quiet-logs",
        hub.env,
    )
    assert quiet.rc == 0, quiet.stdout[-2000:]
    (auxvm,) = quiet.final()["phases"]
    assert any("the play did not run" in n for n in auxvm["notes"]), auxvm["notes"]
    assert not list((tmp_path / "quiet-logs").rglob("auxvm-check")), "the check-mode play ran"


def test_matching_fingerprint_pin_is_accepted(provisioned_hub: Hub, tmp_path: Path) -> None:
    """The other way to pin: the fingerprint alone; the key the VM presents is checked against
    it before Ansible starts (plan: check mode, nothing changes on the shared VM)."""

    def pin(doc: dict[str, Any]) -> None:
        del doc["aux_vm"]["ssh"]["known_hosts"]
        doc["aux_vm"]["ssh"]["host_key_fingerprint"] = provisioned_hub.vm.fingerprint

    inventory = lab_inventory_variant(tmp_path, pin, own_state=True)
    run = run_installer(
        ["plan", "-i", str(inventory), "--only", "auxvm", "-o", "json"],
        tmp_path / "logs",
        provisioned_hub.env,
    )
    assert run.rc == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (auxvm,) = run.final()["phases"]
    # Its own (new) state folder: new CA and passwords would be installed, so there is drift.
    assert any(c["name"] == "site CA" for c in auxvm["changes"])
