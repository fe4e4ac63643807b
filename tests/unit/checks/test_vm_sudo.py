"""vm.sudo on recorded answers of `sudo -n true` (the lab's VM user always has sudo)."""

from __future__ import annotations

from pathlib import Path

import yaml

from installer.checks.context import SiteAccess
from installer.checks.gpu import CommandResult
from installer.checks.preflight_vm import check_sudo
from installer.inventory import load_inventory

EXAMPLE = Path(__file__).resolve().parents[3] / "inventories" / "onprem.example.yml"


class RecordedVm:
    """The VM as the checks see it (the SSH adapter's shape), answering from a recording."""

    where = "ops@10.20.0.10:22"

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        self.calls.append(argv)
        return self.result

    def close(self) -> None:
        """Nothing to close."""


def access(tmp_path: Path, result: CommandResult, *, become: bool = True) -> SiteAccess:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["aux_vm"]["ssh"]["become"] = become
    path = tmp_path / "site.yml"
    path.write_text(yaml.safe_dump(data))
    site = SiteAccess(load_inventory(path))
    site._vm = RecordedVm(result)  # type: ignore[assignment]
    return site


def test_sudo_that_wants_a_password_fails(tmp_path: Path) -> None:
    site = access(tmp_path, CommandResult(1, "", "sudo: a password is required\n"))
    found = check_sudo(site)
    assert not found.ok
    assert found.message == "sudo -n true failed: sudo: a password is required"
    assert found.remedy == "allow ops passwordless sudo (NOPASSWD in sudoers)"
    assert site.vm().calls == [["sudo", "-n", "true"]]  # type: ignore[attr-defined]


def test_passwordless_sudo_passes(tmp_path: Path) -> None:
    assert check_sudo(access(tmp_path, CommandResult(0, ""))).ok


def test_without_become_sudo_is_not_asked(tmp_path: Path) -> None:
    site = access(tmp_path, CommandResult(1, ""), become=False)
    found = check_sudo(site)
    assert found.ok and "ssh.become is false" in found.message
    assert site.vm().calls == []  # type: ignore[attr-defined]
