"""The verify phase: acceptance checks that prove the install; test pods are always cleaned up."""

from __future__ import annotations

from typing import Any

from installer.checks import run_verify
from installer.phases.base import PhaseContext, PhasePlan, PhaseResult
from installer.phases.preflight import report_result


class VerifyPhase:
    """Proves the install works; leaves nothing behind."""

    name = "verify"

    def applies(self, ctx: PhaseContext) -> bool:
        """Always: every install ends by proving it."""
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        """The whole inventory (secret references only)."""
        return {"inventory": ctx.inventory.model_dump(mode="json", by_alias=True)}

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """Nothing to change; short-lived test pods are made and removed at apply time."""
        return PhasePlan(
            self.name,
            notes=["runs the acceptance checks; test pods live in a temporary namespace"],
        )

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Run the acceptance checks."""
        ctx.step(self.name, "proving the install")
        return report_result(self.name, run_verify(ctx.inventory), ctx)


def phase() -> VerifyPhase:
    """The phase, as the catalog loads it."""
    return VerifyPhase()
