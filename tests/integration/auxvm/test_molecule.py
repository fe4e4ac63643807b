"""Each role's molecule scenario against the lab VM: its converge (which must change nothing on
the converged hub) and its verify (`run_molecule`, tests/fixtures/molecule.py).

The scenarios use the delegated driver and the inventory the installer generated for the
provisioned hub (`<lab state>/installer/ansible/aux-vm.inventory.json`): host key pinned, key,
certificate and password paths. They run with the site lock held by `provisioned_hub`, one
after the other: side by side they took longer in the whole test run (236 s against 215 s), the
lanes already sharing two cores."""

from __future__ import annotations

import pytest

from tests.fixtures.auxvm import Hub
from tests.fixtures.molecule import ROLES_DIR, run_molecule

pytestmark = pytest.mark.e2e

# Roles are grouped by area: roles/<area>/<role>/tasks/main.yml.
ROLES = sorted(
    p.parent.parent.relative_to(ROLES_DIR).as_posix() for p in ROLES_DIR.glob("*/*/tasks/main.yml")
)
# The roles of the VM; the nodes' roles run their scenarios against the lab's node host, once the
# nodes phase has written their inventory (tests/e2e/nodes/test_image_pulls.py).
VM_ROLES = [r for r in ROLES if not r.startswith("nodes/")]


def test_every_role_has_a_molecule_scenario() -> None:
    assert ROLES, ROLES_DIR
    missing = [
        r for r in ROLES if not (ROLES_DIR / r / "molecule" / "default" / "molecule.yml").is_file()
    ]
    assert not missing, f"roles without a molecule scenario: {missing}"


@pytest.mark.parametrize("role", VM_ROLES)
def test_molecule_scenario(provisioned_hub: Hub, role: str) -> None:
    generated = provisioned_hub.state / "ansible" / "aux-vm.inventory.json"
    assert generated.is_file(), generated
    run_molecule(role, "aux-vm")
