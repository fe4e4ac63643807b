"""Each role's molecule scenario (syntax, converge, idempotence, verify) against the lab VM.

The scenarios use the delegated driver and the inventory the installer generated for the
provisioned hub (`<lab state>/installer/ansible/aux-vm.inventory.json`): host key pinned, key,
certificate and password paths. They run with the site lock held by `session_hub`.

The scenarios run side by side (`scenario_runs`: one `molecule test` process per role, all
started at once). That is safe because each converges a hub that is already converged: the
test asserts that the first converge changes nothing either, as well as the second (molecule's
idempotence step). Each role's test asserts on its own run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
TIMEOUT_S = 1200


@dataclass(frozen=True)
class ScenarioRun:
    """One role's `molecule test`: its exit status and output."""

    rc: int | None
    """None: still running after TIMEOUT_S (then killed)."""
    out: str


def test_every_role_has_a_molecule_scenario() -> None:
    assert ROLES, ROLES_DIR
    missing = [
        r for r in ROLES if not (ROLES_DIR / r / "molecule" / "default" / "molecule.yml").is_file()
    ]
    assert not missing, f"roles without a molecule scenario: {missing}"
    # Two scenarios side by side must not share molecule's per-scenario folder
    # (~/.cache/molecule/<role folder name>/default).
    names = [r.rsplit("/", 1)[-1] for r in ROLES]
    assert len(names) == len(set(names)), names


@pytest.fixture(scope="module")
def scenario_runs(session_hub: Hub) -> Iterator[dict[str, ScenarioRun]]:
    """`molecule test` of every role, all at once, each with its own output files and its own
    SSH control folder (never a master connection of another run: it would skip the pinned host
    key check; the folder's name is short because socket paths are limited)."""
    generated = session_hub.state / "ansible" / "aux-vm.inventory.json"
    assert generated.is_file(), generated
    with tempfile.TemporaryDirectory(prefix="onprem-mol-") as work:
        procs = {}
        for i, role in enumerate(ROLES):
            control = Path(work) / str(i)
            control.mkdir()
            env = {
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "LAB_STATE": str(lab_state_dir()),
                "ANSIBLE_NOCOLOR": "1",
                "NO_COLOR": "1",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            }
            out = (Path(work) / f"{i}.out").open("w+")
            proc = subprocess.Popen(
                ["molecule", "test"], cwd=ROLES_DIR / role, env=env, text=True,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs[role] = (proc, out)
        deadline = time.monotonic() + TIMEOUT_S
        runs = {}
        for role, (proc, out) in procs.items():
            try:
                rc: int | None = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
            out.seek(0)
            runs[role] = ScenarioRun(rc, out.read())
            out.close()
        yield runs


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(scenario_runs: dict[str, ScenarioRun], role: str) -> None:
    run = scenario_runs[role]
    assert run.rc is not None, f"still running after {TIMEOUT_S} s:\n{run.out[-6000:]}"
    assert run.rc == 0, run.out[-6000:]
    # Every step of the sequence ran (molecule fails the run when the second converge of the
    # idempotence step changes anything).
    for step in ("syntax", "converge", "idempotence", "verify"):
        assert f"[default > {step}] Executed: Successful" in run.out, f"{step}:\n{run.out[-3000:]}"
    # The hub was converged already: the first converge changed nothing either.
    converge = run.out.split("[default > converge] Executing", 1)[1]
    converge = converge.split("[default > converge] Executed", 1)[0]
    recap = re.findall(r"^aux-vm\s*:.*$", converge, re.MULTILINE)
    assert recap and all(" changed=0 " in line for line in recap), converge[-3000:]
