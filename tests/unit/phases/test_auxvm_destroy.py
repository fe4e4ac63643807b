"""`installer destroy` and the hub: it stays unless `--purge`, which names what goes."""

from __future__ import annotations

from pathlib import Path

from installer.inventory import load_inventory
from installer.phases.auxvm import REMOVE_PLAYBOOK, AuxVmPhase
from installer.phases.base import Event, PhaseContext, Removable, Status
from installer.state import StateDir

BASE = Path(__file__).resolve().parents[1] / "inventory" / "base.yml"


def _context(tmp_path: Path) -> PhaseContext:
    inv = load_inventory(BASE)
    events: list[Event] = []
    return PhaseContext(inv, BASE, StateDir(tmp_path / "state"), tmp_path / "run", events.append)


def test_the_hub_is_removable_by_a_playbook_of_its_own() -> None:
    assert isinstance(AuxVmPhase(), Removable)
    assert REMOVE_PLAYBOOK.is_file()
    assert REMOVE_PLAYBOOK.name == "aux-vm-remove.yml"


def test_without_purge_the_hub_stays(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    phase = AuxVmPhase()
    plan = phase.destroy_plan(ctx, purge=False)
    assert plan.changes == [] and "--purge" in plan.notes[0]
    # Nothing is contacted: the VM (192.0.2.10) is not reachable from here.
    result = phase.destroy(ctx, purge=False)
    assert (result.status, result.changes) == (Status.OK, [])


def test_purge_plans_the_hub_and_its_data(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (change,) = AuxVmPhase().destroy_plan(ctx, purge=True).changes
    assert (change.target, change.action, change.kind) == ("vm", "delete", "hub")
    assert change.name == "hub.ml.example.com (192.0.2.10)"
    svc = ctx.inventory.aux_vm.services
    for path in (svc.registry.data_path, svc.chartmuseum.data_path, svc.devpi.data_path):
        assert path in change.detail
