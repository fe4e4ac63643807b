"""Preflight against the lab's VM: pass, a wrong host key, a taken port, DNS records, disks.

The checks of a running hub are in test_hub_checks.py, which provisions the hub itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from installer.checks import Status, run_preflight
from installer.checks.context import SiteAccess, tcp_open
from installer.checks.preflight_kube import evaluate_disk
from installer.checks.remote import fingerprint
from installer.checks.sitenet import check_dns
from installer.inventory import load_inventory
from tests.e2e.checks.conftest import SiteFactory
from tests.fixtures.auxvm import LabVm, listener_on_vm
from tests.fixtures.lab import REPO, Lab, read_env_file

pytestmark = pytest.mark.e2e


def results(path: Path, check_id: str) -> list[tuple[Status, str]]:
    report = run_preflight(load_inventory(path))
    return [(r.status, r.message) for r in report.results if r.id == check_id]


def free_vm_port(lab: Lab) -> int:
    for port in range(17000, 17100):
        if not tcp_open(lab.vm_addr, port, timeout_s=0.5):
            return port
    raise AssertionError("no free port on the VM")


def test_preflight_json_on_the_lab(lab: Lab, site: SiteFactory, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "runs"), "-o", "json",
         "preflight", "--inventory", str(site())],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=300,
    )  # fmt: skip
    data = json.loads(proc.stdout)
    by_id = {(r["id"], r["target"]): r for r in data["results"]}
    vm = f"vm/{lab.vm_addr}"
    for check_id in ("vm.ssh", "vm.sudo", "vm.os", "vm.disk", "vm.clock"):
        assert by_id[(check_id, vm)]["status"] == "pass", by_id[(check_id, vm)]
    assert "host key matches" in by_id[("vm.ssh", vm)]["message"]
    assert proc.returncode == (0 if data["ok"] else 1)
    assert Path(data["report_file"]).is_file()


def test_wrong_host_key_in_known_hosts(lab: Lab, site: SiteFactory, tmp_path: Path) -> None:
    other = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"{lab.vm_addr} {other.get_name()} {other.get_base64()}\n")

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["ssh"]["known_hosts"] = str(known)

    found = results(site(edit), "vm.ssh")
    assert found[0][0] is Status.FAIL
    assert "not the key pinned" in found[0][1] or "host key" in found[0][1]
    sudo = results(site(edit), "vm.sudo")
    assert sudo[0][0] is Status.SKIP and "vm.ssh" in sudo[0][1]


def test_wrong_pinned_fingerprint(lab: Lab, site: SiteFactory) -> None:
    other = fingerprint(paramiko.ECDSAKey.generate())

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["ssh"].pop("known_hosts")
        data["aux_vm"]["ssh"]["host_key_fingerprint"] = other

    ((status, message),) = results(site(edit), "vm.ssh")
    assert status is Status.FAIL
    assert f"the inventory pins {other}" in message and lab.vm_host_key_fingerprint in message


def test_right_pinned_fingerprint(lab: Lab, site: SiteFactory) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["ssh"].pop("known_hosts")
        data["aux_vm"]["ssh"]["host_key_fingerprint"] = lab.vm_host_key_fingerprint

    ((status, message),) = results(site(edit), "vm.ssh")
    assert status is Status.PASS, message
    assert "pinned fingerprint" in message


@pytest.fixture
def foreign_listener(lab: Lab) -> Iterator[int]:
    """A plain-HTTP server on the VM on a free port: something that is not the hub."""
    vm = LabVm.from_env(read_env_file(lab.state / "env.d" / "vm.env"))
    with listener_on_vm(vm, free_vm_port(lab)) as port:
        yield port


def test_taken_port(lab: Lab, site: SiteFactory, foreign_listener: int) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["services"] = {
            "chartmuseum": {"port": foreign_listener, "data_path": "/var/lib/onprem-hub/charts"}
        }

    report = run_preflight(load_inventory(site(edit)))
    (result,) = [r for r in report.results if r.target == f"vm/{lab.vm_addr}:{foreign_listener}"]
    assert result.status is Status.FAIL, result.message
    assert f"port {foreign_listener} for the chartmuseum is taken" in result.message
    assert "python" in result.message  # the owner, as `ss -p` names it
    assert not report.ok


def test_free_port(lab: Lab, site: SiteFactory) -> None:
    port = free_vm_port(lab)

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["services"] = {
            "devpi": {"port": port, "data_path": "/var/lib/onprem-hub/devpi"}
        }

    messages = [m for s, m in results(site(edit), "vm.ports") if s is Status.PASS]
    assert f"port {port} is free" in messages


@pytest.fixture
def vm_dns(lab: Lab) -> Iterator[int]:
    """dnsmasq inside the VM on a free port, serving the lab cluster's names except *.apps."""
    port = free_vm_port(lab)
    domain = "lab.org.ml.lab.test"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.vm_netns, "dnsmasq", "--keep-in-foreground", "--no-resolv",
         "--no-hosts", "--bind-interfaces", f"--listen-address={lab.vm_addr}", f"--port={port}",
         "--pid-file=", f"--address=/{domain}/10.213.0.1", f"--local=/apps.{domain}/",
         "--log-facility=-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        assert proc.poll() is None, "dnsmasq did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_missing_dns_record_fails(lab: Lab, site: SiteFactory, vm_dns: int) -> None:
    port = vm_dns

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["dns"] = {"enabled": True, "port": port}

    inv = load_inventory(site(edit))
    finding = check_dns(SiteAccess(inv), inv.clusters[0], "preflight")
    assert not finding.ok
    assert finding.message.startswith("x.apps.lab.org.ml.lab.test does not resolve")


def test_dns_records_pass_when_complete(lab: Lab, site: SiteFactory, vm_dns: int) -> None:
    port = vm_dns

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["dns"] = {"enabled": True, "port": port}
        data["clusters"][0]["domain"] = "jobs.lab.org.ml.lab.test"  # every name under it resolves

    inv = load_inventory(site(edit))
    finding = check_dns(SiteAccess(inv), inv.clusters[0], "verify")
    assert finding.ok, finding.message


def test_dns_not_served_yet_is_info_in_preflight_and_fails_verify(
    lab: Lab, site: SiteFactory
) -> None:
    port = free_vm_port(lab)

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["aux_vm"]["dns"] = {"enabled": True, "port": port}

    inv = load_inventory(site(edit))
    access = SiteAccess(inv)
    preflight = check_dns(access, inv.clusters[0], "preflight")
    assert preflight.ok and "will serve" in preflight.message
    verify = check_dns(access, inv.clusters[0], "verify")
    assert not verify.ok and "does not answer" in verify.message


@pytest.fixture
def loop_disk(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """A loop device over a 64 MiB file (a stand-in for a node's spare disk), attached to the lab
    VM as a disk is to a machine: the VM has a /dev of its own, so the device's node is made
    there too (same major and minor), and removed with it."""
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        rdev = Path(device).stat().st_rdev
        lab.vm_run(
            f"sudo -n rm -f {device} && sudo -n mknod -m 0660 {device} b"
            f" {os.major(rdev)} {os.minor(rdev)} && sudo -n chgrp disk {device}"
        )
        yield device
    finally:
        lab.vm_run(f"sudo -n rm -f {device}")
        subprocess.run(["losetup", "-d", device], check=False)


def test_disk_probe_over_ssh_raw_then_formatted(
    lab: Lab, site: SiteFactory, loop_disk: str
) -> None:
    access = SiteAccess(load_inventory(site()))
    vm = access.vm()
    try:
        raw = evaluate_disk(loop_disk, vm)
        assert raw.ok, raw.message
        subprocess.run(["mkfs.ext4", "-q", "-F", loop_disk], check=True, capture_output=True)
        formatted = evaluate_disk(loop_disk, vm)
        assert not formatted.ok and f"{loop_disk} carries ext4" in formatted.message
        missing = evaluate_disk("/dev/chk-no-such-disk", vm)
        assert not missing.ok and "not a block device" in missing.message
    finally:
        access.close()


@pytest.mark.parametrize("split", [False, True], ids=["one-file", "split-in-parts"])
def test_bundle_larger_than_the_vm_disk_fails(
    lab: Lab, site: SiteFactory, tmp_path: Path, split: bool
) -> None:
    """1 TiB of bundle (sparse files: nothing written), in one file or in two parts named by the
    bundle's own name: every part counts."""
    bundle = tmp_path / "site.tar.zst"
    files = [tmp_path / f"site.tar.zst.{i:03d}" for i in range(2)] if split else [bundle]
    for path in files:
        with path.open("wb") as handle:
            handle.truncate(1024**4 // len(files))
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "runs"), "-o", "json",
         "preflight", "-i", str(site()), "--bundle", str(bundle)],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (disk,) = [r for r in json.loads(proc.stdout)["results"] if r["id"] == "vm.disk"]
    assert disk["status"] == "fail"
    assert "1.5 TiB needed" in disk["message"], disk["message"]
