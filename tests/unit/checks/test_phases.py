"""The preflight and verify phases: a plan that changes nothing, a result from the report."""

from __future__ import annotations

import json
from pathlib import Path

from installer.checks.framework import Check, Severity, passed, problem, run_checks
from installer.inventory import load_inventory
from installer.phases.base import Event, PhaseContext, Status
from installer.phases.preflight import phase as preflight_phase
from installer.phases.preflight import report_result
from installer.phases.verify import phase as verify_phase
from installer.state import StateDir

REPO = Path(__file__).resolve().parents[3]


def context(tmp_path: Path, events: list[Event]) -> PhaseContext:
    inv = load_inventory(REPO / "inventories" / "onprem.example.yml")
    return PhaseContext(
        inventory=inv,
        inventory_path=REPO / "inventories" / "onprem.example.yml",
        state=StateDir(tmp_path / "state"),
        run_dir=tmp_path / "run",
        emit=events.append,
    )


def test_plans_change_nothing(tmp_path: Path) -> None:
    ctx = context(tmp_path, [])
    for phase in (preflight_phase(), verify_phase()):
        plan = phase.plan(ctx)
        assert plan.phase == phase.name and not plan.has_changes and plan.notes
        assert phase.applies(ctx)
        json.dumps(phase.inputs(ctx))  # the journal hashes it: it must be JSON


def test_failed_report_fails_the_phase(tmp_path: Path) -> None:
    events: list[Event] = []
    ctx = context(tmp_path, events)
    report = run_checks(
        "preflight",
        [
            Check("a", "a", "vm", lambda: passed("ok")),
            Check("b", "b", "vm", lambda: problem("disk full", "grow it")),
            Check("c", "c", "vm", lambda: problem("odd"), Severity.WARN),
        ],
    )
    result = report_result("preflight", report, ctx)
    assert result.status is Status.FAILED and not result.ok
    assert result.message == "1 check(s) failed: 1 pass, 1 fail, 1 warn"
    saved = Path(result.details["report"])
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert json.loads(saved.read_text())["summary"]["fail"] == 1
    assert [(e.kind, e.message) for e in events] == [
        ("error", "b [vm]: disk full"),
        ("warning", "c [vm]: odd"),
    ]


def test_passing_report_passes_the_phase(tmp_path: Path) -> None:
    ctx = context(tmp_path, [])
    report = run_checks("verify", [Check("a", "a", "vm", lambda: passed("ok"))])
    result = report_result("verify", report, ctx)
    assert result.status is Status.OK
    assert Path(result.details["report"]).name == "verify-report.json"
