"""`installer plan` on a site the installer has not provisioned yet: stacks whose charts come from
the hub are listed, not previewed (Helm cannot read a chart from a hub that is not there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from installer.engines import pulumi
from installer.inventory import Inventory
from installer.phases.base import PhaseContext
from installer.phases.stacks import StackPhase
from installer.stacks import StackInput
from installer.stacks import inputs as stack_inputs
from installer.state import StateDir
from tests.unit.stacks.conftest import lab_nodes


class PreviewRecorder:
    """Stands for the Pulumi engine's previews: records each stack it is asked to preview."""

    def __init__(self) -> None:
        self.previewed: list[str] = []

    def preview(self, si: StackInput) -> pulumi.StackSummary:
        self.previewed.append(f"{si.component}/{si.stack}")
        return pulumi.StackSummary(si.component, si.stack, "preview", {})


@pytest.fixture
def previews(monkeypatch: pytest.MonkeyPatch) -> PreviewRecorder:
    recorder = PreviewRecorder()

    def preview(engine: Any, si: StackInput, on_event: Any = None) -> pulumi.StackSummary:
        return recorder.preview(si)

    monkeypatch.setattr(pulumi.PulumiEngine, "preview", preview)
    monkeypatch.setattr(stack_inputs, "live_nodes", lambda target: lab_nodes())
    return recorder


def _context(site: Inventory, tmp_path: Path) -> PhaseContext:
    return PhaseContext(
        inventory=site,
        inventory_path=tmp_path / "site.yml",
        state=StateDir(tmp_path / "state"),
        run_dir=tmp_path / "run",
        emit=lambda event: None,
    )


def test_storage_is_listed_not_previewed_before_the_site_ca_exists(
    site: Inventory, tmp_path: Path, previews: PreviewRecorder
) -> None:
    ctx = _context(site, tmp_path)
    plan = StackPhase("storage").plan(ctx)
    assert previews.previewed == []
    (change,) = plan.changes
    assert (change.target, change.action, change.kind) == ("stack/storage/main", "create", "stack")
    assert "hub" in change.detail
    (note,) = plan.notes
    assert str(ctx.state.ca_cert.resolve()) in note and "auxvm" in note


def test_storage_is_previewed_once_the_site_ca_exists(
    site: Inventory, tmp_path: Path, previews: PreviewRecorder
) -> None:
    ctx = _context(site, tmp_path)
    ctx.state.ca_cert.parent.mkdir(parents=True)
    ctx.state.ca_cert.write_text("-----BEGIN CERTIFICATE-----\n")
    plan = StackPhase("storage").plan(ctx)
    assert previews.previewed == ["storage/main"]
    assert plan.changes == [] and plan.notes == []


def test_a_stack_without_charts_is_previewed_on_a_new_site(
    site: Inventory, tmp_path: Path, previews: PreviewRecorder
) -> None:
    StackPhase("nodes").plan(_context(site, tmp_path))
    StackPhase("platform").plan(_context(site, tmp_path))
    assert previews.previewed == ["nodes/main", "platform/main"]
