"""Fixtures of the checks' e2e tests: the lab, and inventories derived from lab.yml.

These tests never delete the lab's standard nodes and restore anything they patch; the lab is
taken down at the end of the session by whichever fixture started it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from installer.checks import Report, Status
from tests.fixtures.lab import *  # noqa: F403
from tests.fixtures.lab import (
    LAB_DIR,
    LAB_UP_TIMEOUT_S,
    REPO,
    Lab,
    lab_state_dir,
    run_lab_script,
)

NEEDED = ("10-kube.sh", "20-vm.sh")


def _component_up(script: str) -> bool:
    proc = subprocess.run(
        ["bash", str(LAB_DIR / "components" / script), "status"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return proc.returncode == 0


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab's cluster and VM: reused when those two components run, else `lab/up`.

    The checks need nothing else of the lab, so a component still building elsewhere (Pulumi,
    say) does not hold them up. The lab is shared: these tests never take it down.
    """
    if not all(_component_up(c) for c in NEEDED):
        up = run_lab_script("up", timeout=LAB_UP_TIMEOUT_S)
        if up.returncode != 0:
            tail = "\n".join((up.stdout + up.stderr).splitlines()[-20:])
            pytest.fail(f"lab/up failed (exit {up.returncode}):\n{tail}", pytrace=False)
    return Lab.from_state(lab_state_dir())


LAB_INVENTORY = REPO / "inventories" / "lab.yml"
SiteFactory = Callable[..., Path]


def lab_site(lab: Lab) -> dict[str, Any]:
    """lab.yml as data, its relative paths made absolute."""
    text = LAB_INVENTORY.read_text().replace("../lab/.state", str(lab.state))
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@pytest.fixture
def site(lab: Lab, tmp_path: Path) -> SiteFactory:
    """Write a copy of lab.yml, changed by `edit(data)`, and return its path."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        data = lab_site(lab)
        data["site"]["state_dir"] = str(lab.state / "installer")
        if edit is not None:
            edit(data)
        path = tmp_path / f"site-{len(list(tmp_path.glob('site-*.yml')))}.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def by(report: Report, check_id: str) -> dict[str, tuple[Status, str]]:
    """A check's results in a report: status and message by target."""
    return {r.target: (r.status, r.message) for r in report.results if r.id == check_id}
