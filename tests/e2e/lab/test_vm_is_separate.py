"""The lab's auxiliary VM is a machine of its own (issue 20): its own root file system (a Debian
image, lab/vm/packages.txt) beneath a disk of its own, booted with its own systemd as PID 1, so
the hub's play writes only on the VM and its services run as systemd units, as on a real VM.

The purge side (a `destroy --purge` of the hub leaves this machine's files of the same paths
alone) is in tests/e2e/bootstrap/test_connected.py, the module that purges.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.auxvm import Hub, hub_unit
from tests.fixtures.lab import REPO, Lab

pytestmark = pytest.mark.e2e

# The hub's programs, each a systemd unit on the VM (templates/aux-vm/systemd.service.j2).
PROGRAMS = ("registry", "registry-pull", "chartmuseum", "chartmuseum-pull", "devpi",
            "devpi-proxy", "dns")  # fmt: skip
# Debian's own services of the packages the hub uses; the image enables them, the role stops them.
PACKAGED = ("docker-registry.service", "dnsmasq.service", "nginx.service")


def _on_vm(lab: Lab, script: str) -> str:
    return lab.vm_run(script).stdout.decode()


def test_the_vm_boots_its_own_systemd(lab: Lab) -> None:
    assert _on_vm(lab, "ps -o comm= -p 1").strip() == "systemd"
    # is-system-running exits non-zero unless running: read its word, and the failed units.
    state = lab.vm_run("systemctl is-system-running; systemctl --failed --no-legend --plain; true")
    assert state.stdout.decode().splitlines()[0] == "running", state.stdout


def test_its_root_is_its_own_debian_image(lab: Lab) -> None:
    os_release = _on_vm(lab, "cat /etc/os-release")
    assert "ID=debian" in os_release and 'VERSION_ID="12"' in os_release, os_release
    assert _on_vm(lab, "findmnt -no FSTYPE /").strip() == "overlay"
    # This machine's files are not the VM's: this checkout is nowhere on it.
    assert (REPO / "pyproject.toml").is_file()
    assert _on_vm(lab, f"test -e {REPO}/pyproject.toml && echo here || echo absent").strip() == (
        "absent"
    )


def test_the_hubs_files_are_on_the_vm_and_not_on_this_machine(lab: Lab, session_hub: Hub) -> None:
    del session_hub  # the hub is on the VM
    written = ["/etc/onprem-hub/tls/hub.crt", f"/etc/systemd/system/{hub_unit('registry')}",
               "/opt/onprem-hub/bin", "/var/lib/onprem-hub/registry"]  # fmt: skip
    for path in written:
        assert _on_vm(lab, f"sudo -n test -e {path} && echo here").strip() == "here", path
        assert not Path(path).exists(), f"{path} of the hub's play is on this machine"


def test_the_hubs_programs_are_enabled_systemd_units_and_debians_are_stopped(
    lab: Lab, session_hub: Hub
) -> None:
    del session_hub
    units = [hub_unit(p) for p in PROGRAMS]
    active = _on_vm(lab, f"systemctl is-active {' '.join(units)} || true").split()
    enabled = _on_vm(lab, f"systemctl is-enabled {' '.join(units)} || true").split()
    assert active == ["active"] * len(units), dict(zip(units, active, strict=False))
    assert enabled == ["enabled"] * len(units), dict(zip(units, enabled, strict=False))
    packaged_active = _on_vm(lab, f"systemctl is-active {' '.join(PACKAGED)} || true").split()
    packaged_enabled = _on_vm(lab, f"systemctl is-enabled {' '.join(PACKAGED)} || true").split()
    assert packaged_active == ["inactive"] * len(PACKAGED), packaged_active
    assert packaged_enabled == ["disabled"] * len(PACKAGED), packaged_enabled
