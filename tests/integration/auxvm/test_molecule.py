"""Each role's molecule scenario (syntax, converge, idempotence, verify) against the lab VM.

The scenarios use the delegated driver and the inventory the installer generated for the
provisioned hub (`<lab state>/installer/ansible/aux-vm.inventory.json`): host key pinned, key,
certificate and password paths. They run with the site lock held by `provisioned_hub`, one
after the other: side by side they took longer in the whole test run (236 s against 215 s), the
lanes already sharing two cores. The hub is converged already, so each first converge must
change nothing either.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.auxvm import Hub
from tests.fixtures.lab import REPO, lab_state_dir

pytestmark = pytest.mark.e2e

ROLES_DIR = REPO / "playbooks" / "roles"
# Roles are grouped by area: roles/<area>/<role>/tasks/main.yml.
ROLES = sorted(
    p.parent.parent.relative_to(ROLES_DIR).as_posix() for p in ROLES_DIR.glob("*/*/tasks/main.yml")
)


def test_every_role_has_a_molecule_scenario() -> None:
    assert ROLES, ROLES_DIR
    missing = [
        r for r in ROLES if not (ROLES_DIR / r / "molecule" / "default" / "molecule.yml").is_file()
    ]
    assert not missing, f"roles without a molecule scenario: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(provisioned_hub: Hub, role: str) -> None:
    generated = provisioned_hub.state / "ansible" / "aux-vm.inventory.json"
    assert generated.is_file(), generated
    with tempfile.TemporaryDirectory(prefix="onprem-mol-") as control:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "LAB_STATE": str(lab_state_dir()),
            "ANSIBLE_NOCOLOR": "1",
            "NO_COLOR": "1",
            # Never re-use an SSH master connection of another run (it would skip the pinned
            # host key check); the folder's name is short because socket paths are limited.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": control,
        }
        run = subprocess.run(
            ["molecule", "test"],
            cwd=ROLES_DIR / role,
            # One stream, in order: molecule's step lines (its log) around Ansible's output.
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1200,
            env=env,
            check=False,
        )
    out = run.stdout
    assert run.returncode == 0, out[-6000:]
    # Every step of the sequence ran (molecule fails the run when the second converge of the
    # idempotence step changes anything).
    for step in ("syntax", "converge", "idempotence", "verify"):
        assert f"[default > {step}] Executed: Successful" in out, f"{step}:\n{out[-3000:]}"
    # The hub was converged already: the first converge changed nothing either.
    converge = out.split("[default > converge] Executing", 1)[1]
    converge = converge.split("[default > converge] Executed", 1)[0]
    recap = re.findall(r"^aux-vm\s*:.*$", converge, re.MULTILINE)
    assert recap and all(" changed=0 " in line for line in recap), converge[-3000:]
