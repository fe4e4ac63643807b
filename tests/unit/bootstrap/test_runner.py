"""Orchestration: order, selection, resume after a failure at each phase, locking, journal.

The phases are faked at one seam (the mapping of phase names to implementations); the journal,
the lock, the event log and the runner are the real ones.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from installer import bootstrap
from installer.errors import BadInputError, EnvironmentProblem, FailedError
from installer.inventory import load_inventory
from installer.inventory.types import SecretRef
from installer.journal import Journal
from installer.lock import site_lock
from installer.phases.base import (
    PHASE_ORDER,
    Change,
    Event,
    PhaseContext,
    PhasePlan,
    PhaseResult,
    Status,
)
from installer.phases.catalog import REQUIRES, closure, select
from installer.state import StateDir

REPO = Path(__file__).resolve().parents[3]


@dataclass
class FakePhase:
    """A phase that records its calls; it fails, raises or changes on demand."""

    name: str
    calls: list[str]
    fail: bool = False
    raise_error: BaseException | None = None
    changes: int = 0
    needed: bool = True
    inputs_value: Any = "v1"
    message: str = "done"
    applied: list[str] = field(default_factory=list)

    def applies(self, ctx: PhaseContext) -> bool:
        return self.needed

    def inputs(self, ctx: PhaseContext) -> Any:
        return self.inputs_value

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        return PhasePlan(
            self.name,
            [Change("t", "create", "thing", f"{self.name}-{i}") for i in range(self.changes)],
        )

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        self.calls.append(self.name)
        if self.raise_error is not None:
            raise self.raise_error
        if self.fail:
            return PhaseResult(self.name, Status.FAILED, message=f"{self.name} broke")
        changes = [Change("t", "create", "thing", f"{self.name}-{i}") for i in range(self.changes)]
        return PhaseResult(self.name, Status.OK, changes, message=self.message)


@pytest.fixture
def ctx(tmp_path: Path) -> PhaseContext:
    inv = load_inventory(REPO / "inventories" / "onprem.example.yml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return PhaseContext(
        inventory=inv,
        inventory_path=REPO / "inventories" / "onprem.example.yml",
        state=StateDir(tmp_path / "state"),
        run_dir=run_dir,
        emit=bootstrap.EventLog(run_dir),
    )


def fakes(calls: list[str], **overrides: dict[str, Any]) -> dict[str, FakePhase]:
    return {n: FakePhase(n, calls, **overrides.get(n, {})) for n in PHASE_ORDER}


def journal(ctx: PhaseContext) -> Journal:
    return Journal(ctx.state.journal)


def test_runs_every_phase_in_order(ctx: PhaseContext) -> None:
    calls: list[str] = []
    report = bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert calls == list(PHASE_ORDER)
    assert report.ok
    assert journal(ctx).data.bootstrap == "ok"


def test_dependencies_point_backwards() -> None:
    for name, deps in REQUIRES.items():
        for dep in deps:
            assert PHASE_ORDER.index(dep) < PHASE_ORDER.index(name)
    assert closure("verify") == set(PHASE_ORDER) - {"verify"}


@pytest.mark.parametrize(
    ("only", "start", "skip", "expected"),
    [
        (["auxvm"], None, None, ["auxvm"]),
        (["verify", "nodes"], None, None, ["nodes", "verify"]),
        (None, "keycloak", None, ["keycloak", "platform", "verify"]),
        (None, "dns", ["keycloak"], ["dns", "platform", "verify"]),
        (
            None,
            None,
            ["airgap_load", "preflight"],
            [n for n in PHASE_ORDER if n not in ("airgap_load", "preflight")],
        ),
    ],
)
def test_selection(only: Any, start: Any, skip: Any, expected: list[str]) -> None:
    assert select(only, start, skip) == expected


def test_bad_selection() -> None:
    with pytest.raises(BadInputError, match="unknown phase 'nodez'"):
        select(["nodez"])
    with pytest.raises(BadInputError, match="do not combine"):
        select(["nodes"], "dns")


def test_phase_not_needed_is_skipped_not_failed(ctx: PhaseContext) -> None:
    calls: list[str] = []
    report = bootstrap.apply(
        ctx, fakes(calls, airgap_load={"needed": False}), list(PHASE_ORDER), journal(ctx)
    )
    assert "airgap_load" not in calls
    assert report.ok
    assert [o.status for o in report.outcomes if o.name == "airgap_load"] == ["skipped"]


@pytest.mark.parametrize("failing", PHASE_ORDER)
def test_resume_after_failure_at_each_phase(ctx: PhaseContext, failing: str) -> None:
    calls: list[str] = []
    report = bootstrap.apply(
        ctx, fakes(calls, **{failing: {"fail": True}}), list(PHASE_ORDER), journal(ctx)
    )
    assert not report.ok
    assert calls == list(PHASE_ORDER[: PHASE_ORDER.index(failing) + 1])
    assert journal(ctx).data.phases[failing].state == "failed"
    assert journal(ctx).data.bootstrap == "failed"

    calls.clear()
    report = bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert report.ok
    done_before = [n for n in PHASE_ORDER[: PHASE_ORDER.index(failing)] if n != "preflight"]
    expected = [n for n in PHASE_ORDER if n not in done_before]
    assert calls == expected
    assert {o.name for o in report.outcomes if o.status == "done"} == set(done_before)


def test_interrupted_phase_is_rerun(ctx: PhaseContext) -> None:
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        bootstrap.apply(
            ctx,
            fakes(calls, storage={"raise_error": KeyboardInterrupt()}),
            list(PHASE_ORDER),
            journal(ctx),
        )
    assert journal(ctx).data.phases["storage"].state == "running"
    assert journal(ctx).data.bootstrap == "running"
    calls.clear()
    bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert calls[:2] == ["preflight", "storage"]


def test_changed_inputs_rerun_the_phase(ctx: PhaseContext) -> None:
    calls: list[str] = []
    bootstrap.apply(ctx, fakes(calls, dns={"fail": True}), list(PHASE_ORDER), journal(ctx))
    calls.clear()
    bootstrap.apply(
        ctx, fakes(calls, nodes={"inputs_value": "v2"}), list(PHASE_ORDER), journal(ctx)
    )
    assert "nodes" in calls and "auxvm" not in calls


def test_dependents_rerun_when_a_dependency_changed(ctx: PhaseContext) -> None:
    calls: list[str] = []
    bootstrap.apply(ctx, fakes(calls, dns={"fail": True}), list(PHASE_ORDER), journal(ctx))
    calls.clear()
    # nodes' inputs changed and it changes the cluster again: storage (depends on nodes) re-runs,
    # auxvm (independent) stays done.
    bootstrap.apply(
        ctx,
        fakes(calls, nodes={"inputs_value": "v2", "changes": 1}),
        list(PHASE_ORDER),
        journal(ctx),
    )
    assert calls[:3] == ["preflight", "nodes", "storage"]
    assert "auxvm" not in calls


def test_after_a_complete_run_everything_runs_again(ctx: PhaseContext) -> None:
    calls: list[str] = []
    bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    calls.clear()
    report = bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert calls == list(PHASE_ORDER)  # converge: every phase checks for drift
    assert report.changes == 0


def test_installer_error_is_journaled_and_reraised(ctx: PhaseContext) -> None:
    calls: list[str] = []
    with pytest.raises(EnvironmentProblem):
        bootstrap.apply(
            ctx,
            fakes(calls, auxvm={"raise_error": EnvironmentProblem("VM unreachable")}),
            list(PHASE_ORDER),
            journal(ctx),
        )
    entry = journal(ctx).data.phases["auxvm"]
    assert (entry.state, entry.message) == ("failed", "VM unreachable")


def test_journal_and_events_never_hold_a_secret(
    ctx: PhaseContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hub-password-Zq81xx"
    monkeypatch.setenv("HUB_PW", secret)
    value = SecretRef("env:HUB_PW").resolve().get_secret_value()
    calls: list[str] = []
    with pytest.raises(FailedError):
        bootstrap.apply(
            ctx,
            fakes(
                calls,
                nodes={"message": f"login with {value}"},
                storage={"raise_error": FailedError(f"refused {value}")},
            ),
            list(PHASE_ORDER),
            journal(ctx),
        )
    text = ctx.state.journal.read_text()
    assert secret not in text and "***" in text
    events = (ctx.run_dir / "events.jsonl").read_text()
    assert secret not in events


def test_events_are_json_lines(ctx: PhaseContext) -> None:
    seen: list[Event] = []
    ctx.emit = bootstrap.EventLog(ctx.run_dir, seen.append)
    calls: list[str] = []
    bootstrap.apply(ctx, fakes(calls, nodes={"changes": 2}), ["preflight", "nodes"], journal(ctx))
    lines = [json.loads(line) for line in (ctx.run_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["phase"]) for e in lines] == [
        ("phase_started", "preflight"),
        ("phase_finished", "preflight"),
        ("phase_started", "nodes"),
        ("phase_finished", "nodes"),
    ]
    assert lines[-1]["data"]["changes"] == 2
    assert len(seen) == 4


def test_plan_merges_phase_plans(ctx: PhaseContext) -> None:
    calls: list[str] = []
    plans = bootstrap.plan(
        ctx, fakes(calls, nodes={"changes": 2}, airgap_load={"needed": False}), list(PHASE_ORDER)
    )
    assert [p.phase for p in plans] == [n for n in PHASE_ORDER if n != "airgap_load"]
    assert sum(len(p.changes) for p in plans) == 2
    assert calls == []  # planning applies nothing


def _hold_lock(state: str, ready: Any, release: Any) -> None:
    with site_lock(Path(state), "bootstrap --inventory x.yml"):
        ready.set()
        release.wait(10)


def test_lock_refuses_a_second_run_and_names_the_holder(tmp_path: Path) -> None:
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(EnvironmentProblem) as info, site_lock(tmp_path, "bootstrap"):
            pass
        assert f"pid {holder.pid}" in info.value.message
        assert "bootstrap --inventory x.yml" in info.value.message
    finally:
        release.set()
        holder.join(10)
    with site_lock(tmp_path, "bootstrap"):  # released when the holder ended
        pass


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(10)
    assert holder.pid is not None
    os.kill(holder.pid, 9)
    holder.join(10)
    with site_lock(tmp_path, "bootstrap"):
        pass


def test_unreadable_journal_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="journal"):
        Journal(path)


@dataclass
class FakeRemovable(FakePhase):
    """A fake phase that can also be taken back."""

    purged: list[bool] = field(default_factory=list)

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        return PhasePlan(self.name, [Change("t", "delete", "thing", self.name)])

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        self.calls.append(f"destroy:{self.name}")
        self.purged.append(purge)
        if self.fail:
            return PhaseResult(self.name, Status.FAILED, message="stuck")
        return PhaseResult(self.name, Status.OK, [Change("t", "delete", "thing", self.name)])


def test_destroy_runs_in_reverse_order_and_clears_the_journal(ctx: PhaseContext) -> None:
    calls: list[str] = []
    phases: dict[str, Any] = fakes(calls)
    for name in ("auxvm", "nodes", "platform"):
        phases[name] = FakeRemovable(name, calls)
    bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    calls.clear()
    plans = bootstrap.destroy_plan(ctx, phases, list(PHASE_ORDER), purge=False)
    assert [p.phase for p in plans] == ["platform", "nodes", "auxvm"]
    report = bootstrap.destroy(ctx, phases, list(PHASE_ORDER), journal(ctx), purge=True)
    assert calls == ["destroy:platform", "destroy:nodes", "destroy:auxvm"]
    assert report.ok and phases["auxvm"].purged == [True]
    data = journal(ctx).data
    assert data.bootstrap == "none"
    assert not {"auxvm", "nodes", "platform"} & set(data.phases)


def test_destroy_stops_at_a_failure(ctx: PhaseContext) -> None:
    calls: list[str] = []
    phases: dict[str, Any] = fakes(calls)
    phases["platform"] = FakeRemovable("platform", calls)
    phases["nodes"] = FakeRemovable("nodes", calls, fail=True)
    phases["auxvm"] = FakeRemovable("auxvm", calls)
    report = bootstrap.destroy(ctx, phases, list(PHASE_ORDER), journal(ctx))
    assert calls == ["destroy:platform", "destroy:nodes"]
    assert not report.ok
