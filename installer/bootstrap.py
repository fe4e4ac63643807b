"""The bootstrap runner: phases in order, journaled, resumable, one run per site at a time.

`plan()` merges every selected phase's plan. `apply()` runs them: a phase that finished in an
interrupted or failed attempt with the same inputs is skipped (unless a phase it depends on had
to change something again); the first failure stops the run and is recorded, so the next run
resumes there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer import __version__
from installer.errors import InstallerError
from installer.inventory import Inventory
from installer.journal import Journal, JournalData, PhaseState, inputs_hash
from installer.phases.base import (
    PHASE_ORDER,
    Event,
    EventSink,
    Phase,
    PhaseContext,
    PhasePlan,
    Removable,
    Status,
)
from installer.phases.catalog import ALWAYS_RUN, closure
from installer.redact import REDACTOR
from installer.release import load_release

log = logging.getLogger("installer.bootstrap")


@dataclass
class PhaseOutcome:
    """What happened to one phase in a run."""

    name: str
    status: str
    """`ok`, `failed`, `skipped` (not needed by this site) or `done` (finished earlier)."""
    changes: int = 0
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "phase": self.name,
            "status": self.status,
            "changes": self.changes,
            "message": self.message,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class BootstrapReport:
    """The outcome of a bootstrap run."""

    outcomes: list[PhaseOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no phase failed."""
        return all(o.status != "failed" for o in self.outcomes)

    @property
    def changes(self) -> int:
        """Changes made, over all phases."""
        return sum(o.changes for o in self.outcomes)


class EventLog:
    """An event sink writing `events.jsonl` in the run folder (redacted) and forwarding on."""

    def __init__(self, run_dir: Path, forward: EventSink | None = None) -> None:
        self.path = run_dir / "events.jsonl"
        self._forward = forward

    def __call__(self, event: Event) -> None:
        line = REDACTOR.redact(json.dumps(event.as_dict(), default=str))
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self._forward is not None:
            self._forward(event)


def plan(ctx: PhaseContext, phases: Mapping[str, Phase], names: list[str]) -> list[PhasePlan]:
    """Every selected phase's plan, in order; phases the site does not need are left out."""
    plans = []
    for name in names:
        phase = phases[name]
        if not phase.applies(ctx):
            continue
        ctx.emit(Event("phase_started", name, "planning"))
        result = phase.plan(ctx)
        for change in result.changes:
            ctx.emit(Event("change", name, f"{change.action} {change.name}", change.as_dict()))
        ctx.emit(Event("phase_finished", name, f"{len(result.changes)} change(s)"))
        plans.append(result)
    return plans


def apply(
    ctx: PhaseContext,
    phases: Mapping[str, Phase],
    names: list[str],
    journal: Journal,
    *,
    resume: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> BootstrapReport:
    """Run the selected phases in order, journaling each; stop at the first failure."""
    report = BootstrapReport()
    resuming = resume and journal.resuming
    changed: set[str] = set()
    journal.data.versions = deployed_versions(ctx.inventory)
    journal.begin_bootstrap()
    run = ctx.run_dir.name
    for name in names:
        phase = phases[name]
        if not phase.applies(ctx):
            ctx.emit(
                Event("phase_finished", name, "not needed by this site", {"status": "skipped"})
            )
            report.outcomes.append(PhaseOutcome(name, "skipped", message="not needed by this site"))
            continue
        digest = inputs_hash(phase.inputs(ctx))
        if (
            resuming
            and name not in ALWAYS_RUN
            and journal.finished_with(name, digest)
            and not (closure(name) & changed)
        ):
            message = "finished in the previous attempt with the same inputs"
            ctx.emit(Event("phase_finished", name, message, {"status": "done"}))
            report.outcomes.append(PhaseOutcome(name, "done", message=message))
            continue
        ctx.emit(Event("phase_started", name))
        journal.phase_started(name, digest, run)
        started = clock()
        try:
            result = phase.apply(ctx)
        except InstallerError as exc:
            journal.phase_finished(name, "failed", 0, exc.message)
            journal.end_bootstrap(ok=False)
            ctx.emit(Event("error", name, exc.message, {"exit_code": int(exc.exit_code)}))
            raise
        seconds = clock() - started
        state: PhaseState = "ok" if result.ok else "failed"
        journal.phase_finished(name, state, len(result.changes), result.message)
        if result.changes:
            changed.add(name)
        outcome = PhaseOutcome(name, state, len(result.changes), result.message, seconds)
        report.outcomes.append(outcome)
        ctx.emit(Event("phase_finished", name, result.message, outcome.as_dict()))
        if result.status is Status.FAILED:
            log.info("phase %s failed: %s", name, result.message)
            journal.end_bootstrap(ok=False)
            return report
    journal.end_bootstrap(ok=True)
    return report


def removable(phases: Mapping[str, Phase], names: list[str]) -> list[Removable]:
    """The selected phases that can be taken back, in reverse install order."""
    return [p for n in reversed(names) if isinstance(p := phases[n], Removable)]


def destroy_plan(
    ctx: PhaseContext, phases: Mapping[str, Phase], names: list[str], *, purge: bool
) -> list[PhasePlan]:
    """What `destroy()` would remove, phase by phase in reverse order."""
    return [p.destroy_plan(ctx, purge=purge) for p in removable(phases, names)]


def destroy(
    ctx: PhaseContext,
    phases: Mapping[str, Phase],
    names: list[str],
    journal: Journal,
    *,
    purge: bool = False,
) -> BootstrapReport:
    """Take the site back in reverse order; stop at the first failure (re-run continues)."""
    report = BootstrapReport()
    for phase in removable(phases, names):
        ctx.emit(Event("phase_started", phase.name, "destroying"))
        result = phase.destroy(ctx, purge=purge)
        outcome = PhaseOutcome(phase.name, str(result.status), len(result.changes), result.message)
        report.outcomes.append(outcome)
        ctx.emit(Event("phase_finished", phase.name, result.message, outcome.as_dict()))
        if not result.ok:
            journal.data.bootstrap = "failed"
            journal.save()
            return report
        journal.data.phases.pop(phase.name, None)
        journal.save()
    journal.data.bootstrap = "none"
    journal.save()
    return report


STACK_PHASES = ("nodes", "storage", "dns", "keycloak", "platform")
"""Phases that run one Pulumi stack per cluster (change targets `stack/<component>/<cluster>`)."""


def deployed_versions(inventory: Inventory) -> dict[str, str]:
    """What a bootstrap of this inventory deploys: installer, release, platform per cluster,
    and the release's charts and tools (recorded in the journal, shown by `status`)."""
    release = load_release()
    versions = {"installer": __version__, "release": release.platform_version}
    for cluster in inventory.clusters:
        versions[f"platform/{cluster.name}"] = cluster.platform.version or release.platform_version
    versions.update({f"chart/{c.name}": c.version for c in release.charts})
    versions.update({f"tool/{b.name}": b.version for b in release.binaries})
    return versions


def _cluster_of(target: str) -> str | None:
    parts = target.split("/")
    if parts[0] == "stack" and len(parts) == 3:
        return parts[2]
    if parts[0] == "cluster" and len(parts) >= 2:
        return parts[1]
    return None


def site_status(
    inventory: Inventory, data: JournalData, plans: list[PhasePlan] | None = None
) -> dict[str, Any]:
    """The journal's view of the site per phase and per cluster; with `plans` (a refresh:
    every phase's plan against the live site), the drift each would correct."""
    drift = {p.phase: p.changes for p in plans} if plans is not None else None
    phases = []
    for name in PHASE_ORDER:
        entry = data.phases.get(name)
        row: dict[str, Any] = {
            "phase": name,
            "state": entry.state if entry else "never",
            "changes": entry.changes if entry else 0,
            "finished": entry.finished if entry else None,
            "message": entry.message if entry else "",
        }
        if drift is not None:
            row["drift"] = len(drift[name]) if name in drift else None
        phases.append(row)
    clusters: dict[str, dict[str, Any]] = {}
    for cluster in inventory.clusters:
        per: dict[str, Any] = {}
        for name in STACK_PHASES:
            entry = data.phases.get(name)
            item: dict[str, Any] = {
                "state": entry.state if entry else "never",
                "finished": entry.finished if entry else None,
            }
            if drift is not None and name in drift:
                item["drift"] = sum(1 for c in drift[name] if _cluster_of(c.target) == cluster.name)
            per[name] = item
        clusters[cluster.name] = per
    return {
        "bootstrap": data.bootstrap,
        "refreshed": plans is not None,
        "versions": dict(data.versions),
        "phases": phases,
        "clusters": clusters,
    }
