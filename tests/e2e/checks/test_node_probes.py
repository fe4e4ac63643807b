"""Node probes over SSH (`clusters[].node_ssh`) through the real CLI, on the lab.

The lab's nodes are simulated (kwok) and have no SSH, so the lab VM stands in for a GPU node:
the test inventory maps node h100-1 to the VM's address (`node_ssh.addresses`), with the VM's
key pinned in the lab's known_hosts. The VM has no GPU, so a test-only `nvidia-smi` prints a
recorded output (tests/fixtures/nvidia_smi). It lives in a folder of its own that a line at the
top of the VM user's ~/.bashrc puts first on PATH (bash reads ~/.bashrc for commands sshd runs);
both are written over SSH (the VM has a file system of its own) and go when the module ends.
A loop device on the VM stands in for an OpenEBS disk of h100-1 (raw, then formatted).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.e2e.bootstrap.cli import installer, site_lock
from tests.e2e.checks.conftest import SiteFactory
from tests.e2e.checks.test_preflight_vm import loop_disk  # noqa: F401 - the fixture
from tests.fixtures.lab import REPO, Lab

pytestmark = pytest.mark.e2e

FIXTURES = REPO / "tests" / "fixtures" / "nvidia_smi"
SHIM = """#!/bin/sh
# Test-only stand-in for nvidia-smi (tests/e2e/checks/test_node_probes.py): prints a recorded
# output; refuses arguments the GPU probe does not use, so a changed probe shows here.
here=$(dirname "$0")
query="--query-gpu=index,name,uuid,memory.total,driver_version,mig.mode.current"
if [ -f "$here/rc" ]; then cat "$here/output.txt"; exit "$(cat "$here/rc")"; fi
case "$*" in
  "-L") cat "$here/list.txt" ;;
  "$query --format=csv,noheader,nounits") cat "$here/query.csv" ;;
  *) echo "nvidia-smi stand-in: unexpected arguments: $*" >&2; exit 2 ;;
esac
"""
MARK = "# onprem-installer checks e2e: test-only nvidia-smi first on PATH (removed after)"


@pytest.fixture(scope="module", autouse=True)
def held_site() -> Iterator[None]:
    """The lab site alone for the module: it changes the VM user's shell start-up."""
    with site_lock():
        yield


@pytest.fixture(scope="module")
def shim(lab: Lab) -> Iterator[Callable[[str], None]]:
    """Put the test-only nvidia-smi on the VM user's PATH; `use(name)` picks its fixture.

    Leaves the VM as found: the folder is removed and ~/.bashrc gets its exact bytes back in
    place (or is removed if it did not exist).
    """
    folder = lab.vm_run("mktemp -d /tmp/onprem-chk-nvsmi-XXXXXX").stdout.decode().strip()
    saved = f"{folder}.bashrc"
    lab.vm_run(f"chmod 0755 {folder} && if [ -e ~/.bashrc ]; then cp -p ~/.bashrc {saved}; fi")
    try:
        lab.vm_run(f"cat >{folder}/nvidia-smi && chmod 0755 {folder}/nvidia-smi", SHIM)
        line = f'PATH="{folder}:$PATH"  {MARK}'
        lab.vm_run(
            f"{{ printf '%s\\n' {shlex.quote(line)}; cat {saved} 2>/dev/null; }} >{folder}.new"
            f" && cat {folder}.new >~/.bashrc && rm {folder}.new"
        )

        def use(name: str) -> None:
            lab.vm_run(f"cd {folder} && rm -f query.csv list.txt output.txt rc")
            for recorded in (FIXTURES / name).iterdir():
                lab.vm_run(f"cat >{folder}/{recorded.name}", recorded.read_bytes())

        yield use
    finally:
        lab.vm_run(
            f"if [ -e {saved} ]; then cat {saved} >~/.bashrc; else rm -f ~/.bashrc; fi;"
            f" rm -rf {folder} {saved} {folder}.new"
        )


def node_ssh(lab: Lab, **fields: Any) -> dict[str, Any]:
    """node_ssh for the lab cluster: the lab VM's login, h100-1 at the VM's address."""
    return {
        "user": lab.vm_user,
        "private_key": f"file:{lab.vm_key}",
        "known_hosts": str(lab.vm_known_hosts),
        "address_source": "addresses",
        "addresses": {"h100-1": lab.vm_addr},
        **fields,
    }


def preflight(
    site: SiteFactory, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """`installer preflight --inventory <copy> --output json`: results by (id, target)."""
    path = site(edit)
    rc, data, tail = installer("preflight", "--inventory", str(path), log_dir=tmp_path, timeout=300)
    assert data, tail
    assert rc == (0 if data["ok"] else 1), tail
    return {(r["id"], r["target"]): r for r in data["results"]}


H100 = "cluster/lab/pool/h100"
A100 = "cluster/lab/pool/a100"


def with_node_ssh(lab: Lab, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["clusters"][0]["node_ssh"] = node_ssh(lab, **fields)

    return edit


def test_without_node_ssh_the_probe_says_how_to_enable_it(
    lab: Lab, site: SiteFactory, tmp_path: Path
) -> None:
    results = preflight(site, tmp_path, lambda data: None)
    probe = results[("gpu.probe", H100)]
    assert probe["status"] == "info" and "clusters[].node_ssh" in probe["message"]


def test_matching_hardware_passes(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("h100-sxm5-80gb")
    results = preflight(site, tmp_path, with_node_ssh(lab))
    probe = results[("gpu.probe", H100)]
    assert probe["status"] == "pass", probe
    assert probe["message"] == "nvidia-smi agrees with the pool on 1 node(s): h100-1"
    # The a100 pool's nodes are not in addresses: said, not probed.
    other = results[("gpu.probe", A100)]
    assert other["status"] == "info" and "a100-1 is not in node_ssh.addresses" in other["message"]


def test_the_same_through_the_vm_as_jump_host(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("h100-sxm5-80gb")
    results = preflight(site, tmp_path, with_node_ssh(lab, jump="aux-vm"))
    assert results[("gpu.probe", H100)]["status"] == "pass", results[("gpu.probe", H100)]


def test_other_gpus_fail(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("a100-sxm4-80gb")
    probe = preflight(site, tmp_path, with_node_ssh(lab))[("gpu.probe", H100)]
    assert probe["status"] == "fail"
    assert probe["message"] == (
        "h100-1: GPU model is NVIDIA-A100-SXM4-80GB, the pool says NVIDIA-H100-80GB-HBM3"
    )
    assert probe["remedy"] == "fix the node's driver or the pool's gpu block"


def test_a_count_the_pool_does_not_say_fails(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("h100-sxm5-80gb")

    def edit(data: dict[str, Any]) -> None:
        with_node_ssh(lab)(data)
        (pool,) = [p for p in data["clusters"][0]["node_pools"] if p["name"] == "h100"]
        pool["gpu"]["count"] = 4

    probe = preflight(site, tmp_path, edit)[("gpu.probe", H100)]
    assert probe["status"] == "fail" and probe["message"] == (
        "h100-1: 8 GPUs found, the pool says 4"
    )


def test_a_node_without_a_driver_fails(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("no-driver")
    probe = preflight(site, tmp_path, with_node_ssh(lab))[("gpu.probe", H100)]
    assert probe["status"] == "fail"
    assert probe["message"].startswith("h100-1: nvidia-smi failed (exit 9): NVIDIA-SMI has failed")


def test_a_wrong_host_key_fails_by_node_name(
    lab: Lab, site: SiteFactory, tmp_path: Path, shim: Callable[[str], None]
) -> None:
    shim("h100-sxm5-80gb")
    other = paramiko.ECDSAKey.generate()
    known = tmp_path / "nodes_known_hosts"
    known.write_text(f"{lab.vm_addr} {other.get_name()} {other.get_base64()}\n")
    results = preflight(site, tmp_path, with_node_ssh(lab, known_hosts=str(known)))
    probe = results[("gpu.probe", H100)]
    assert probe["status"] == "fail"
    assert probe["message"] == f"h100-1: host {lab.vm_addr}:22: host key verification failed"
    assert "node_ssh for h100-1" in probe["remedy"] and "known_hosts" in probe["remedy"]
    # The VM's own pin is untouched: its checks still pass with the same inventory.
    assert results[("vm.ssh", f"vm/{lab.vm_addr}")]["status"] == "pass"


def test_an_unreachable_node_fails_by_name(lab: Lab, site: SiteFactory, tmp_path: Path) -> None:
    # An address on the lab VM's link that no host has, its key pinned (the VM's): the
    # connection is tried and cannot be made.
    address = lab.vm_addr.rsplit(".", 1)[0] + ".254"
    vm_key = lab.vm_known_hosts.read_text().split()[1:3]
    known = tmp_path / "nodes_known_hosts"
    known.write_text(f"{address} {' '.join(vm_key)}\n")
    edit = with_node_ssh(lab, addresses={"h100-1": address}, known_hosts=str(known), timeout_s=4)
    probe = preflight(site, tmp_path, edit)[("gpu.probe", H100)]
    assert probe["status"] == "fail"
    assert probe["message"].startswith(f"h100-1: host {address}:22: "), probe["message"]
    assert "node_ssh for h100-1" in probe["remedy"]


def test_a_node_missing_from_known_hosts_is_refused(
    lab: Lab, site: SiteFactory, tmp_path: Path
) -> None:
    address = lab.vm_addr.rsplit(".", 1)[0] + ".254"
    edit = with_node_ssh(lab, addresses={"h100-1": address})
    probe = preflight(site, tmp_path, edit)[("gpu.probe", H100)]
    assert probe["status"] == "fail"
    assert probe["message"] == f"h100-1: {lab.vm_known_hosts} has no key for {address}"


def test_a_disk_on_the_node_is_checked_over_ssh(
    lab: Lab,
    site: SiteFactory,
    tmp_path: Path,
    loop_disk: str,  # noqa: F811 - the fixture
) -> None:
    def edit(data: dict[str, Any]) -> None:
        with_node_ssh(lab)(data)
        data["clusters"][0]["storage"] = {
            "engine": "localpv-lvm",
            "disks": [{"node": "h100-1", "device": loop_disk}],
        }

    target = ("storage.disks", f"node/h100-1:{loop_disk}")
    disk = preflight(site, tmp_path, edit)[target]
    assert disk["status"] == "pass" and disk["message"] == f"{loop_disk} is raw and unmounted"
    subprocess.run(["mkfs.ext4", "-q", "-F", loop_disk], check=True, capture_output=True)
    formatted = preflight(site, tmp_path, edit)[target]
    assert formatted["status"] == "fail"
    assert formatted["message"].startswith(f"{loop_disk} carries ext4"), formatted["message"]
