"""The preflight phase: every site check before anything changes; a failed check stops bootstrap."""

from __future__ import annotations

from typing import Any

from installer.checks import Report, Status, run_preflight
from installer.phases.base import Event, PhaseContext, PhasePlan, PhaseResult
from installer.phases.base import Status as PhaseStatus


def report_result(phase: str, report: Report, ctx: PhaseContext) -> PhaseResult:
    """A phase result from a check report: failed when the report is not ok."""
    path = report.write(ctx.run_dir)
    for result in report.results:
        if result.status in (Status.FAIL, Status.WARN):
            line = f"{result.id} [{result.target}]: {result.message}"
            if result.status is Status.FAIL:
                ctx.emit(Event("error", phase, line))
            else:
                ctx.emit(Event("warning", phase, line))
    counts = ", ".join(f"{n} {s}" for s, n in report.summary().items() if n)
    failed = [r for r in report.results if r.status is Status.FAIL]
    message = counts if report.ok else f"{len(failed)} check(s) failed: {counts}"
    details: dict[str, Any] = {"report": str(path), "summary": report.summary()}
    return PhaseResult(
        phase, PhaseStatus.OK if report.ok else PhaseStatus.FAILED, [], message, details
    )


class PreflightPhase:
    """Checks the site; changes nothing."""

    name = "preflight"

    def applies(self, ctx: PhaseContext) -> bool:
        """Always: every install starts by checking the site."""
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        """The whole inventory (secret references only) and the bundle's identity."""
        return {
            "inventory": ctx.inventory.model_dump(mode="json", by_alias=True),
            "bundle": ctx.bundle.manifest_sha256 if ctx.bundle else None,
        }

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """Nothing to change; the checks run at apply time."""
        return PhasePlan(self.name, notes=["runs the preflight checks; changes nothing"])

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Run the checks."""
        ctx.step(self.name, "checking the site")
        size = ctx.bundle.size if ctx.bundle is not None else None
        return report_result(self.name, run_preflight(ctx.inventory, bundle_size=size), ctx)


def phase() -> PreflightPhase:
    """The phase, as the catalog loads it."""
    return PreflightPhase()
