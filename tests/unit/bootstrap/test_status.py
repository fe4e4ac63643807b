"""`installer status`: every phase in order, per cluster, the versions deployed, drift."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from installer import bootstrap
from installer.inventory import load_inventory
from installer.journal import Journal
from installer.phases.base import PHASE_ORDER, Change, PhasePlan

REPO = Path(__file__).resolve().parents[3]
MULTI = REPO / "inventories" / "multi-cluster.example.yml"


def _journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.json")
    journal.data.versions = bootstrap.deployed_versions(load_inventory(MULTI))
    # Written out of order on purpose: status shows the bootstrap's order.
    for name in ("nodes", "auxvm", "preflight"):
        journal.phase_started(name, "d", "run-1")
        journal.phase_finished(name, "ok", 2 if name == "nodes" else 0, f"{name} done")
    journal.phase_started("storage", "d", "run-1")
    journal.phase_finished("storage", "failed", 0, "chart missing")
    return journal


def test_phases_in_bootstrap_order_with_never_run_ones(tmp_path: Path) -> None:
    view = bootstrap.site_status(load_inventory(MULTI), _journal(tmp_path).data)
    assert [p["phase"] for p in view["phases"]] == list(PHASE_ORDER)
    states = {p["phase"]: p["state"] for p in view["phases"]}
    assert states["preflight"] == "ok" and states["storage"] == "failed"
    assert states["platform"] == "never"
    assert view["refreshed"] is False and "drift" not in view["phases"][0]


def test_per_cluster_view_and_versions(tmp_path: Path) -> None:
    inv = load_inventory(MULTI)
    view = bootstrap.site_status(inv, _journal(tmp_path).data)
    assert set(view["clusters"]) == {c.name for c in inv.clusters}
    for per in view["clusters"].values():
        assert list(per) == list(bootstrap.STACK_PHASES)
        assert per["nodes"]["state"] == "ok" and per["storage"]["state"] == "failed"
    versions = view["versions"]
    assert versions["installer"] and versions["release"]
    assert {f"platform/{c.name}" for c in inv.clusters} <= set(versions)
    assert any(k.startswith("chart/") for k in versions)


def test_refresh_counts_drift_per_phase_and_cluster(tmp_path: Path) -> None:
    inv = load_inventory(MULTI)
    first, second = (c.name for c in inv.clusters)
    plans = [PhasePlan(name) for name in PHASE_ORDER if name not in ("nodes", "platform")] + [
        PhasePlan(
            "nodes",
            [
                Change(f"stack/nodes/{first}", "update", "kubernetes:core/v1:Node", "n1"),
                Change(f"stack/nodes/{first}", "update", "kubernetes:core/v1:Node", "n2"),
                Change(f"stack/nodes/{second}", "update", "kubernetes:core/v1:Node", "n3"),
            ],
        ),
        PhasePlan("platform", [Change(f"stack/platform/{second}", "create", "x", "y")]),
    ]
    view = bootstrap.site_status(inv, _journal(tmp_path).data, plans)
    drift = {p["phase"]: p["drift"] for p in view["phases"]}
    assert drift["nodes"] == 3 and drift["platform"] == 1 and drift["dns"] == 0
    assert view["clusters"][first]["nodes"]["drift"] == 2
    assert view["clusters"][second]["nodes"]["drift"] == 1
    assert view["clusters"][first]["platform"]["drift"] == 0
    assert view["refreshed"] is True


def test_status_cli_on_a_site_never_bootstrapped(tmp_path: Path) -> None:
    inventory = tmp_path / "site.yml"
    text = MULTI.read_text()
    assert "state_dir:" not in text
    inventory.write_text(
        text.replace("  name: globex\n", f"  name: globex\n  state_dir: {tmp_path / 'state'}\n", 1)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs"),
         "-o", "json", "status", "-i", str(inventory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["bootstrap"] == "none"
    assert {p["state"] for p in view["phases"]} == {"never"}
