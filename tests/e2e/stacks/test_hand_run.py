"""Hand runs with the Pulumi CLI in stacks/<x> do exactly what the installer does (the lab).

`installer stacks config` writes the stacks' `Pulumi.lab.yaml` and prints the environment; with
it, `pulumi stack select lab && pulumi up` in a copy of the repository's `stacks/` folder runs the
project's `__main__.py` through the Python language host on PATH: the real
`pulumi-language-python` when the lab could build it, else the installer's stand-in (the test
says which it used). Both directions are checked on the same state: a hand `up` leaves the nodes
as the installer's own `up` does and the installer then previews zero changes; after the
installer's `up`, a hand `pulumi preview --expect-no-changes` passes. The nodes are given back as
they were at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from installer.engines.pulumi_toolchain import PYTHON_LANGUAGE_HOST, is_stand_in
from installer.site import POOL_LABEL, POOL_LABEL_LEGACY
from tests.e2e.bootstrap.cli import site_lock
from tests.e2e.stacks.conftest import Site
from tests.e2e.stacks.test_nodes import EXPECTED_POOLS, _facts, _stack
from tests.fixtures.lab import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.lab_site]

HAND_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def lab_site() -> Iterator[None]:
    """The lab site alone for the module."""
    with site_lock():
        yield


@pytest.fixture(scope="module")
def hand(site: Site, lab_site: None) -> dict[str, Any]:
    """The site's stacks folder (the repository's, copied) configured by `stacks config`."""
    shutil.copytree(
        REPO / "stacks",
        site.folder / "stacks",
        ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"),
    )
    started = time.monotonic()
    result = site.ok("stacks", "config", "--cluster", "lab")
    result["seconds"] = time.monotonic() - started
    return result


def _pulumi(
    site: Site, hand: dict[str, Any], component: str, *argv: str
) -> subprocess.CompletedProcess[str]:
    """`pulumi ARGV` in stacks/<component>, with only what `stacks config` printed (and HOME)."""
    return subprocess.run(
        ["pulumi", *argv, "--non-interactive"],
        cwd=site.folder / "stacks" / component,
        env={**hand["env"], "HOME": str(site.folder)},
        capture_output=True,
        text=True,
        timeout=HAND_TIMEOUT_S,
        check=False,
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{' '.join(proc.args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_config_writes_every_stack_and_the_language_host_is_found(
    site: Site, hand: dict[str, Any]
) -> None:
    # Relative to the folder the installer ran in (the site's), as `--stacks-dir` is.
    assert (site.folder / hand["written"][0]).is_file()
    assert sorted(hand["written"]) == sorted(
        f"stacks/{c}/Pulumi.lab.yaml" for c in ("nodes", "storage", "dns", "keycloak", "platform")
    )
    host = shutil.which(PYTHON_LANGUAGE_HOST, path=hand["env"]["PATH"])
    assert host is not None
    real = Path(site.lab.env["LAB_PULUMI_BIN_DIR"]) / PYTHON_LANGUAGE_HOST
    if real.exists():
        assert Path(host) == real, "the lab built the real host: it must win over the stand-in"
    else:
        assert is_stand_in(Path(host)) and Path(host).parent == site.state / "pulumi" / "bin"
    kind = "stand-in" if is_stand_in(Path(host)) else "real"
    print(f"\nstacks config {hand['seconds']:.1f} s; language host: {host} ({kind})")


def test_hand_run_of_nodes_does_what_the_installer_does(
    site: Site, hand: dict[str, Any], core: client.CoreV1Api
) -> None:
    before = _facts(core)
    try:
        _ok(_pulumi(site, hand, "nodes", "stack", "select", "lab"))
        started = time.monotonic()
        up = _ok(_pulumi(site, hand, "nodes", "up", "--yes"))
        hand_s = time.monotonic() - started
        assert "created" in up
        by_hand = _facts(core)
        for node, pool in EXPECTED_POOLS.items():
            labels = by_hand[node][0]
            assert labels[POOL_LABEL] == labels[POOL_LABEL_LEGACY] == pool, node

        # The installer finds nothing to do after the hand run.
        plan = _stack(site.ok("stacks", "preview", "-c", "nodes"))
        assert plan["changes"] == 0, plan["steps"]

        # From the same start, the installer's own up leaves the nodes exactly as the hand run did.
        site.ok("stacks", "destroy", "-c", "nodes", "--yes")
        assert _facts(core) == before
        started = time.monotonic()
        site.ok("stacks", "up", "-c", "nodes")
        installer_s = time.monotonic() - started
        assert _facts(core) == by_hand

        # And the reverse: after the installer's up, a hand preview expects no change.
        _ok(_pulumi(site, hand, "nodes", "preview", "--expect-no-changes"))
        print(f"\nnodes: hand up {hand_s:.1f} s, installer up {installer_s:.1f} s")
    finally:
        site.ok("stacks", "destroy", "-c", "nodes", "--yes")
    assert _facts(core) == before


def test_installer_up_then_hand_preview_of_dns_has_no_changes(
    site: Site, hand: dict[str, Any], core: client.CoreV1Api
) -> None:
    _ok(_pulumi(site, hand, "dns", "stack", "select", "lab"))
    # Nothing deployed yet: the hand preview sees the changes (the check below can fail).
    pending = _pulumi(site, hand, "dns", "preview", "--expect-no-changes")
    assert pending.returncode != 0, pending.stdout
    try:
        up = _stack(site.ok("stacks", "up", "-c", "dns"))
        assert up["changes"] > 0
        service = core.read_namespaced_service("ingress", "platform-ingress")
        assert service.spec.external_i_ps == ["10.213.0.50"]
        started = time.monotonic()
        _ok(_pulumi(site, hand, "dns", "preview", "--expect-no-changes"))
        print(f"\ndns: hand no-change preview {time.monotonic() - started:.1f} s")
    finally:
        site.ok("stacks", "destroy", "-c", "dns", "--yes")
