"""The hub on a VM without systemd (issue 20): the role's supervisord path, on a VM of its own.

Every real VM, and the lab's, boots systemd; the hub's role keeps a path for hosts without it
(containers, minimal images), where Debian's supervisor keeps the services running. This module
boots a throwaway lab VM with sshd alone under a minimal init (`LAB_VM_INIT=sshd`, a copy of lab/
on addresses of its own, beside the session's lab), converges the hub on it the Ansible-only way
(`installer auxvm inventory`, then `ansible-playbook`; the registry and the DNS alone), and checks
that supervisord runs them, brings a killed one back, and that a second run changes nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.lab.labcopy import component, copy_lab
from tests.fixtures.auxvm import LabVm, lab_inventory_variant, run_installer
from tests.fixtures.lab import REPO, Lab, lab_state_dir, read_env_file

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.own_lab]

VM_CHANGES = {
    "LAB_VM_NETNS": "onprem-lab-vms",
    "LAB_VM_HOST_ADDR": "10.213.8.1",
    "LAB_VM_ADDR": "10.213.8.2",
    "LAB_VM_USER": "labopss",
    "LAB_VM_VETH_HOST": "olab-vms",
    "LAB_VM_INIT": "sshd",
}
SUPERVISORCTL = ["sudo", "-n", "supervisorctl", "-c", "/etc/onprem-hub/supervisord.conf"]
# Only the registry and the DNS: the supervisord path is the same for every program.
ONLY = ["-e", "hub_chartmuseum_enabled=false", "-e", "hub_devpi_enabled=false"]
PUSH_PORT = 5001


@dataclass(frozen=True)
class PlainVm:
    """The VM without systemd, with the hub's registry and DNS on it."""

    vm: LabVm
    ca_cert: Path
    first: subprocess.CompletedProcess[str]
    play: Any  # () -> CompletedProcess: the same ansible-playbook run again

    @property
    def address(self) -> str:
        return self.vm.address

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """argv on the VM over SSH, pinned host key."""
        return self.vm.run(*argv)


@pytest.fixture(scope="module")
def plain_vm(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainVm]:
    del lab  # the toolchain and the hub's programs of the session's lab
    tmp = tmp_path_factory.mktemp("no-systemd")
    lab_copy = copy_lab(tmp, VM_CHANGES)
    env = {"LAB_STATE": str(tmp / "state")}
    try:
        up = component(lab_copy, "20-vm.sh", "up", env, timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        facts = read_env_file(tmp / "state" / "env.d" / "vm.env")

        def change(doc: dict[str, Any]) -> None:
            vm = doc["aux_vm"]
            vm["address"] = facts["LAB_VM_ADDR"]
            vm["hostname"] = "hub-plain.ml.lab.test"
            vm["ssh"].update(user=facts["LAB_VM_USER"], private_key=f"file:{facts['LAB_VM_KEY']}",
                             known_hosts=facts["LAB_VM_KNOWN_HOSTS"])  # fmt: skip
            vm["programs_dir"] = str(lab_state_dir() / "hub-programs")

        inventory = lab_inventory_variant(tmp, change, own_state=True)
        written = run_installer(
            ["auxvm", "inventory", "-i", str(inventory), "-o", "json"], tmp / "logs", {}
        )
        assert written.rc == 0, written.stdout[-2000:] + written.stderr[-2000:]
        generated = written.final()["inventory"]
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        run_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": path}

        def play() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ansible-playbook", "-i", generated, str(REPO / "playbooks" / "aux-vm.yml"),
                 *ONLY],
                capture_output=True, text=True, timeout=900, env=run_env, cwd=tmp,
            )  # fmt: skip

        yield PlainVm(
            vm=LabVm.from_env(facts),
            ca_cert=tmp / "state" / "pki" / "ca.crt",
            first=play(),
            play=play,
        )
    finally:
        down = component(lab_copy, "20-vm.sh", "down", env, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def _status(vm: PlainVm) -> dict[str, tuple[str, int, int]]:
    """supervisorctl status: program -> (state, pid, seconds up)."""
    out = vm.run([*SUPERVISORCTL, "status"]).stdout
    found: dict[str, tuple[str, int, int]] = {}
    for line in out.splitlines():
        running = re.match(r"(\S+)\s+RUNNING\s+pid (\d+), uptime (\d+):(\d\d):(\d\d)", line)
        if running:
            name, pid, h, m, s = running.groups()
            found[name] = ("RUNNING", int(pid), int(h) * 3600 + int(m) * 60 + int(s))
        elif line.split():
            found[line.split()[0]] = (line.split()[1], 0, 0)
    return found


def _answers(vm: PlainVm) -> bool:
    try:
        url = f"https://{vm.address}:{PUSH_PORT}/v2/"
        return httpx.get(url, verify=str(vm.ca_cert), timeout=5).status_code == 401
    except httpx.TransportError:
        return False


def test_the_hub_converges_under_supervisord(plain_vm: PlainVm) -> None:
    first = plain_vm.first
    assert first.returncode == 0, first.stdout[-4000:]
    assert "failed=0" in first.stdout, first.stdout[-3000:]
    assert plain_vm.run(["test", "-d", "/run/systemd/system"]).returncode != 0
    want = {"onprem-hub-registry", "onprem-hub-registry-pull", "onprem-hub-dns"}
    # The play's last handler restarts dnsmasq: STARTING until supervisord counts it as started.
    deadline = time.monotonic() + 30
    while True:
        status = _status(plain_vm)
        assert set(status) == want, status
        if all(state == "RUNNING" for state, _, _ in status.values()):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert _answers(plain_vm)


def test_a_killed_program_comes_back_under_supervisord(plain_vm: PlainVm) -> None:
    before = _status(plain_vm)["onprem-hub-registry"][1]
    assert before > 0
    killed = plain_vm.run(["sudo", "-n", "kill", "-KILL", str(before)])
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 60
    while True:
        state, pid, up = _status(plain_vm).get("onprem-hub-registry", ("", 0, 0))
        if state == "RUNNING" and pid not in (0, before) and up >= 3 and _answers(plain_vm):
            break
        assert time.monotonic() < deadline, f"the registry is not back: {state} {pid} {up}"
        time.sleep(0.5)


def test_a_second_run_changes_nothing(plain_vm: PlainVm) -> None:
    again = plain_vm.play()
    assert again.returncode == 0, again.stdout[-3000:]
    recap = re.findall(r"^aux-vm\s*:.*$", again.stdout, re.MULTILINE)
    assert recap and all(" changed=0 " in line for line in recap), again.stdout[-3000:]
