"""Part 2's services stop by pid and leave nothing: a second upstream (registry, wheel index,
nginx) started from a copy of lab/ on other ports, beside the session's lab, then taken down.

The copy needs the repository files the upstream reads (the release manifest through the
`installer` package, the hashed lockfiles its wheelhouse and DevPI install from and are keyed by,
the venv); they are linked in.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab.labcopy import component, copy_lab, listening
from tests.fixtures.lab import REPO, Lab, read_env_file, read_versions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHIFT = 10000
UPSTREAM_DAEMONS = ("upstream-registry", "upstream-devpi", "upstream-nginx")


def live_processes() -> dict[int, int]:
    """Every live (not zombie) process: pid -> parent pid."""
    table: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z":
            table[int(proc.name)] = int(fields[1])
    return table


def family(pids: set[int]) -> set[int]:
    """The live processes among `pids` and all their descendants (nginx's workers, say)."""
    table = live_processes()
    found = {p for p in pids if p in table}
    grew = True
    while grew:
        children = {pid for pid, parent in table.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder others may enter: nginx's workers run as www-data, and pytest's
    tmp_path sits under a 0700 folder."""
    with tempfile.TemporaryDirectory(prefix="lab-upstream-") as top:
        Path(top).chmod(0o755)
        yield Path(top)


def test_upstream_down_leaves_no_process_listener_or_state(lab: Lab, open_tmp: Path) -> None:
    del lab  # the session lab built the content this upstream serves
    tmp_path = open_tmp
    ports = {
        name: str(int(value) + SHIFT)
        for name, value in read_versions().items()
        if name.startswith("LAB_UPSTREAM_") and name.endswith("_PORT")
    }
    lab_copy = copy_lab(tmp_path, ports)
    for name in (
        "installer",
        "airgap",
        ".venv",
        "pyproject.toml",
        "constraints.txt",
        "requirements",
    ):
        (tmp_path / name).symlink_to(REPO / name)
    state = tmp_path / "state"
    env = {"LAB_STATE": str(state)}
    try:
        up = component(lab_copy, "60-upstream.sh", "up", env, timeout=600)
        assert up.returncode == 0, up.stderr
        facts = read_env_file(state / "env.d" / "60-upstream.env")
        registry = f"127.0.0.1:{ports['LAB_UPSTREAM_REGISTRY_PORT']}"
        assert facts["LAB_UPSTREAM_REGISTRY"] == registry
        # It serves: one image of the manifest answers skopeo at its mirror path.
        certs = tmp_path / "certs.d"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(Path(facts["LAB_UPSTREAM_CA"]).read_bytes())
        creds = Path(facts["LAB_UPSTREAM_AUTH_FILE"]).read_text().strip()
        inspect = subprocess.run(
            [
                *("skopeo", "inspect", "--raw", "--cert-dir", str(certs), "--creds", creds),
                f"docker://{registry}/docker.io/library/busybox:latest",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert inspect.returncode == 0, inspect.stderr
        assert json.loads(inspect.stdout)["layers"]
        status = component(lab_copy, "60-upstream.sh", "status", env, timeout=60)
        assert status.returncode == 0, status.stdout
        pids = {int((state / "run" / f"{d}.pid").read_text()) for d in UPSTREAM_DAEMONS}
        started = family(pids)
        assert pids <= started
        assert len(started) > len(pids), "nginx's worker was expected beside its master"
    finally:
        down = component(lab_copy, "60-upstream.sh", "down", env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not family(started)
    assert not [int(p) for p in ports.values() if listening(int(p))]
    assert not (state / "upstream").exists()
    assert not (state / "env.d" / "60-upstream.env").exists()
    status = component(lab_copy, "60-upstream.sh", "status", env, timeout=60)
    assert status.returncode == 1
