"""A connected site end to end (issue 8, `make demo`): from nothing to a verified platform.

The lab site (`inventories/lab.yml`, with its `upstream:` pointing at the lab's stand-in
internet) is taken back to nothing by `installer destroy --purge` (cluster side destroyed, the
hub's services and data gone from the VM, and nothing of this machine's own in folders of the
same names touched) and the installer's last mirror is forgotten. One
`installer bootstrap` then fills the hub from the upstream (the `airgap_load` phase) and installs
everything up to a green verify. The hub then
holds every image of the release at the upstream's digest, every chart and every wheel. A second
bootstrap changes nothing, and `installer plan --expect-no-changes` agrees. Verify turns red when
a pool's taint is removed by hand.

Like `make demo` followed by a new user's own commands, every run has a plain shell's
environment (PATH and HOME only, `plain_env()`): the inventory and its state folder say all.

The module holds the lab site alone (`site_lock()`) from first to last and leaves the site
converged; the cluster side is given back (destroyed) once the package's last module is done
with it (`cluster_side_given_back`, tests/e2e/bootstrap/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from installer.airgap.load import site_target
from installer.airgap.manifest import parse_manifest
from installer.engines.registry import RegistryClient, RegistryEndpoint
from installer.inventory import load_inventory
from installer.release import load_release
from installer.site import JOB_TAINT, normalize_image
from tests.e2e.bootstrap.cli import LAB_INVENTORY, installer, plain_env, site_lock
from tests.e2e.bootstrap.runs import (
    CANARY,
    HUB_PLACES,
    Bootstrap,
    host_canaries,
    hub_data_left,
    run_bootstrap,
    upstream,
)
from tests.e2e.checks.kwok import core
from tests.fixtures.lab import Lab
from tests.fixtures.lab_services import LabServices

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PHASES = ("preflight", "auxvm", "airgap_load", "nodes", "storage", "dns", "keycloak", "platform",
          "verify")  # fmt: skip


@dataclass(frozen=True)
class ConnectedSite:
    """What the module's install left to look at."""

    first: Bootstrap
    second: Bootstrap
    plan_rc: int
    plan_tail: str
    logs: Path
    left_after_purge: list[str]
    """The hub's folders still on the VM after `destroy --purge` (none)."""
    canaries_after_purge: list[str]
    """This machine's canary files in the hub's folders, read after the purge (all still there)."""
    fresh_plan: tuple[int, dict[str, Any], str]
    """`installer plan --only auxvm` on the VM as it was before the hub (no service account)."""


# The hub's service account (playbooks/roles/hub/common/defaults/main.yml).
HUB_USER = "onprem-hub"


def _state_root() -> Path:
    return site_target(load_inventory(LAB_INVENTORY))[1]


@pytest.fixture(scope="module")
def connected_site(
    lab: Lab, cluster_side_given_back: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectedSite]:
    tmp = tmp_path_factory.mktemp("connected")
    env = plain_env()
    with site_lock():
        upstream("up")
        with host_canaries() as canaries:
            rc, _, tail = installer(
                "destroy", "-i", str(LAB_INVENTORY), "--yes", "--purge",
                log_dir=tmp / "logs", timeout=900, env=env,
            )  # fmt: skip
            canaries_after_purge = [str(c) for c in canaries if c.is_file()]
        assert rc == 0, f"destroy --purge failed (exit {rc}):\n{tail}"
        left_after_purge = hub_data_left(lab, LAB_INVENTORY)
        shutil.rmtree(_state_root() / "airgap" / "mirror", ignore_errors=True)
        # A VM the hub was never on: purge keeps the service account (documented), so it goes
        # by hand. What an operator runs first on such a VM is the plan of its hub.
        lab.vm_run(
            f"sudo -n userdel {HUB_USER} 2>/dev/null; sudo -n groupdel {HUB_USER} 2>/dev/null;"
            f" ! getent passwd {HUB_USER}"
        )
        fresh_plan = installer(
            "plan", "-i", str(LAB_INVENTORY), "--only", "auxvm",
            log_dir=tmp / "fresh-plan", timeout=900, env=env,
        )  # fmt: skip
        first = run_bootstrap(LAB_INVENTORY, tmp / "first", env)
        second = run_bootstrap(LAB_INVENTORY, tmp / "second", env) if first.rc == 0 else first
        plan_rc, _, plan_tail = installer(
            "plan", "-i", str(LAB_INVENTORY), "--expect-no-changes",
            log_dir=tmp / "plan", timeout=900, env=env,
        )  # fmt: skip
        site = ConnectedSite(
            first, second, plan_rc, plan_tail, tmp, left_after_purge, canaries_after_purge,
            fresh_plan,
        )  # fmt: skip
        (tmp / "phase-seconds.json").write_text(
            json.dumps({"first": first.seconds(), "second": second.seconds()}, indent=1)
        )
        yield site


def _failing(report: dict[str, Any]) -> list[str]:
    return [
        f"{r['id']} [{r['target']}]: {r['message']}"
        for r in report.get("results", [])
        if r["status"] in ("fail", "warn")
    ]


def test_destroy_purge_took_the_hub_off_the_vm(connected_site: ConnectedSite) -> None:
    assert connected_site.left_after_purge == []


def test_destroy_purge_left_this_machines_own_files_alone(connected_site: ConnectedSite) -> None:
    """The lab VM is a machine of its own (issue 20): a purge of its hub deletes on the VM only,
    never in this machine's folders of the same names."""
    assert connected_site.canaries_after_purge == [f"{p}/{CANARY}" for p in HUB_PLACES]


def test_the_hubs_plan_on_a_vm_it_was_never_on_lists_what_bootstrap_will_do(
    connected_site: ConnectedSite,
) -> None:
    """Check mode cannot run a task as the service account the run would create: the plan of a
    new VM once failed there (devpi-init)."""
    rc, doc, tail = connected_site.fresh_plan
    assert rc == 0, f"plan on a new VM failed (exit {rc}):\n{tail}"
    (auxvm,) = [p for p in doc["phases"] if p["phase"] == "auxvm"]
    names = {c["name"] for c in auxvm["changes"]}
    assert "Create the service account" in names, names
    assert "Write devpi-init's one-time config (root password, 0600)" in names, names


def test_bootstrap_from_nothing_ends_verified(connected_site: ConnectedSite) -> None:
    first = connected_site.first
    assert first.rc == 0, f"bootstrap failed (exit {first.rc}):\n{first.tail}"
    assert first.summary["ok"] is True
    assert {p["phase"]: p["status"] for p in first.summary["phases"]} == dict.fromkeys(PHASES, "ok")
    report = json.loads((first.run_dir / "verify-report.json").read_text(encoding="utf-8"))
    assert report["ok"] is True and not _failing(report), _failing(report)
    statuses = {(r["id"], r["target"]): r["status"] for r in report["results"]}
    assert statuses[("sched.preset", "cluster/lab/preset/a100x8")] == "pass"
    assert statuses[("storage.provisioning", "cluster/lab")] == "info"  # kwok: not checkable


def test_the_hub_was_filled_from_the_upstream(
    connected_site: ConnectedSite, lab_services: LabServices
) -> None:
    """The hub started empty; now every release image resolves to the upstream's digest, and
    every chart and wheel of the mirror is served."""
    load = connected_site.first.phase("airgap_load")
    release = load_release()
    assert load["message"].startswith(f"mirrored from the upstream: {len(release.images)} images")
    assert load["changes"] > 0
    target, state_root = site_target(load_inventory(LAB_INVENTORY))
    user, password = lab_services.auth_file.read_text().strip().split(":", 1)
    upstream = RegistryEndpoint(lab_services.registry, lab_services.ca, user, SecretStr(password))
    with RegistryClient(target.registry) as hub, RegistryClient(upstream) as source:
        for image in release.images:
            name = normalize_image(image.name)
            at_hub = hub.manifest_digest(name, image.tag)
            assert at_hub is not None, f"the hub lacks {name}:{image.tag}"
            assert at_hub == source.manifest_digest(name, image.tag), name
    assert target.charts is not None and target.pypi is not None
    charts = target.charts.chart_names()
    for chart in release.charts:
        assert chart.version in charts.get(chart.name, []), chart.name
    mirrored = parse_manifest((state_root / "airgap" / "mirror" / "manifest.json").read_bytes())
    wheels = [i for i in mirrored.items if i.kind == "wheel"]
    assert {w.name.replace("_", "-").lower() for w in wheels} >= {
        w.name.replace("_", "-").lower() for w in release.wheels
    }
    missing = [w.path for w in wheels if not target.pypi.has(w.path.rsplit("/", 1)[-1])]
    assert not missing
    # The pull's folder and bundle are gone; the site-local key stays private.
    mirror = state_root / "airgap" / "mirror"
    assert not (mirror / "work").exists() and not (mirror / "release.tar.zst").exists()
    assert (mirror / "sign.pem").stat().st_mode & 0o777 == 0o600


def test_a_second_bootstrap_changes_nothing(connected_site: ConnectedSite) -> None:
    second = connected_site.second
    assert second is not connected_site.first, "the first bootstrap failed"
    assert second.rc == 0, second.tail
    changed = {p["phase"]: p["changes"] for p in second.summary["phases"] if p["changes"]}
    assert second.summary["changes"] == 0, changed
    assert second.phase("airgap_load")["message"].startswith("the hub holds release")
    assert not [e for e in second.events if e.get("event") == "change"]


def test_plan_expects_no_changes_after_bootstrap(connected_site: ConnectedSite) -> None:
    assert connected_site.plan_rc == 0, connected_site.plan_tail


def test_status_after_bootstrap_shows_no_drift(lab: Lab, connected_site: ConnectedSite) -> None:
    rc, view, tail = installer(
        "status", "-i", str(LAB_INVENTORY), "--refresh",
        log_dir=connected_site.logs / "status", timeout=900, env=plain_env(),
    )  # fmt: skip
    assert rc == 0, tail
    assert view["bootstrap"] == "ok" and view["refreshed"] is True
    assert {p["phase"]: p["state"] for p in view["phases"]} == dict.fromkeys(PHASES, "ok")
    assert {p["phase"]: p["drift"] for p in view["phases"]} == dict.fromkeys(PHASES, 0)
    assert view["clusters"]["lab"]["platform"] == {
        "state": "ok", "finished": view["clusters"]["lab"]["platform"]["finished"], "drift": 0,
    }  # fmt: skip
    assert view["versions"]["platform/lab"] == view["versions"]["release"]


def test_verify_from_a_plain_shell_passes(connected_site: ConnectedSite) -> None:
    assert connected_site.first.rc == 0, "the bootstrap failed"
    rc, report, tail = installer(
        "verify", "-i", str(LAB_INVENTORY), log_dir=connected_site.logs / "verify-plain",
        timeout=600, env=plain_env(),
    )  # fmt: skip
    assert rc == 0, tail
    assert report["ok"] is True, _failing(report)


def test_verify_fails_when_a_pool_taint_is_removed_by_hand(
    lab: Lab, connected_site: ConnectedSite
) -> None:
    assert connected_site.first.rc == 0, "the bootstrap failed"
    api = core(lab)
    node = api.read_node("h100-1")
    saved = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints or []]
    assert any(t["key"] == JOB_TAINT for t in saved), "the nodes phase did not taint h100-1"
    try:
        api.patch_node("h100-1", {"spec": {"taints": [t for t in saved if t["key"] != JOB_TAINT]}})
        rc, report, tail = installer(
            "verify", "-i", str(LAB_INVENTORY), log_dir=connected_site.logs / "verify",
            timeout=600,
        )  # fmt: skip
    finally:
        api.patch_node("h100-1", {"spec": {"taints": saved}})
    assert rc == 1, tail
    (result,) = [
        r for r in report["results"]
        if r["id"] == "sched.job_taint" and r["target"] == "cluster/lab/pool/h100"
    ]  # fmt: skip
    assert result["status"] == "fail"
    assert "scheduled on h100-1" in result["message"]
