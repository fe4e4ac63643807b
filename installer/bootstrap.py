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
from installer.phases.catalog import ALWAYS_RUN, CLUSTER_PHASES, closure
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
    clusters: dict[str, str] = field(default_factory=dict)
    """A cluster phase on a site of several clusters: each cluster's status (`ok`, `failed`,
    `done`, or `skipped` after it failed in an earlier phase)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "phase": self.name,
            "status": self.status,
            "changes": self.changes,
            "message": self.message,
            "seconds": round(self.seconds, 2),
            **({"clusters": dict(self.clusters)} if self.clusters else {}),
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
    """Run the selected phases in order, journaling each; stop at the first failure.

    A cluster phase (`CLUSTER_PHASES`) runs once per cluster: a cluster that fails there is left
    out of the later cluster phases while the others go on to the end of theirs; the site phases
    after them (verify) do not run, and the run fails naming the cluster. A re-run resumes each
    cluster where it stopped."""
    run = _Run(ctx, journal, resume and journal.resuming, clock)
    journal.data.versions = deployed_versions(ctx.inventory)
    journal.begin_bootstrap()
    for name in names:
        phase = phases[name]
        if not phase.applies(ctx):
            ctx.emit(
                Event("phase_finished", name, "not needed by this site", {"status": "skipped"})
            )
            run.report.outcomes.append(
                PhaseOutcome(name, "skipped", message="not needed by this site")
            )
            continue
        if name in CLUSTER_PHASES:
            run.cluster_phase(phase)
            continue
        if run.failed:
            message = f"not run: {run.failed_clusters()}"
            ctx.emit(Event("phase_finished", name, message, {"status": "skipped"}))
            run.report.outcomes.append(PhaseOutcome(name, "skipped", message=message))
            continue
        if not run.site_phase(phase):
            journal.end_bootstrap(ok=False)
            return run.report
    journal.end_bootstrap(ok=not run.failed)
    run.raise_cluster_error()
    return run.report


@dataclass
class _ClusterFailure:
    phase: str
    message: str
    error: InstallerError | None


class _Run:
    """One `apply()`: what changed (per site and per cluster) and which clusters failed."""

    def __init__(
        self, ctx: PhaseContext, journal: Journal, resuming: bool, clock: Callable[[], float]
    ) -> None:
        self.ctx, self.journal, self.resuming, self.clock = ctx, journal, resuming, clock
        self.report = BootstrapReport()
        self.changed: set[str] = set()
        """Site phases that changed something in this run."""
        self.changed_in: dict[str, set[str]] = {c.name: set() for c in ctx.inventory.clusters}
        self.failed: dict[str, _ClusterFailure] = {}

    def _done(self, name: str, changed: set[str], finished: bool) -> bool:
        return (
            self.resuming
            and name not in ALWAYS_RUN
            and finished
            and not (closure(name) & (self.changed | changed))
        )

    def site_phase(self, phase: Phase) -> bool:
        """Run a site phase; False when it failed (an InstallerError is journaled, raised)."""
        ctx, journal, name = self.ctx, self.journal, phase.name
        digest = inputs_hash(phase.inputs(ctx))
        if self._done(name, set(), journal.finished_with(name, digest)):
            message = "finished in the previous attempt with the same inputs"
            ctx.emit(Event("phase_finished", name, message, {"status": "done"}))
            self.report.outcomes.append(PhaseOutcome(name, "done", message=message))
            return True
        ctx.emit(Event("phase_started", name))
        journal.phase_started(name, digest, ctx.run_dir.name)
        started = self.clock()
        try:
            result = phase.apply(ctx)
        except InstallerError as exc:
            journal.phase_finished(name, "failed", 0, exc.message)
            journal.end_bootstrap(ok=False)
            ctx.emit(Event("error", name, exc.message, {"exit_code": int(exc.exit_code)}))
            raise
        state: PhaseState = "ok" if result.ok else "failed"
        journal.phase_finished(name, state, len(result.changes), result.message)
        if result.changes:
            self.changed.add(name)
        outcome = PhaseOutcome(
            name, state, len(result.changes), result.message, self.clock() - started
        )
        self.report.outcomes.append(outcome)
        ctx.emit(Event("phase_finished", name, result.message, outcome.as_dict()))
        if result.status is Status.FAILED:
            log.info("phase %s failed: %s", name, result.message)
            return False
        return True

    def cluster_phase(self, phase: Phase) -> None:
        """Run a cluster phase on each cluster that has not failed yet."""
        ctx, journal, name = self.ctx, self.journal, phase.name
        ctx.emit(Event("phase_started", name))
        started = self.clock()
        per: dict[str, str] = {}
        messages: list[str] = []
        changes = 0
        digests: list[str] = []
        started_any = False
        for cluster in ctx.inventory.clusters:
            if cluster.name in self.failed:
                per[cluster.name] = "skipped"
                continue
            narrowed = ctx.for_cluster(cluster.name)
            digest = inputs_hash(phase.inputs(narrowed))
            digests.append(digest)
            finished = journal.cluster_finished_with(cluster.name, name, digest)
            if self._done(name, self.changed_in[cluster.name], finished):
                per[cluster.name] = "done"
                ctx.step(name, f"{cluster.name}: finished in the previous attempt")
                continue
            if not started_any:
                # The phase's entry says `running` while any cluster runs it (an interruption
                # leaves it so).
                journal.phase_started(name, "", ctx.run_dir.name)
                started_any = True
            journal.cluster_started(cluster.name, name, digest, ctx.run_dir.name)
            try:
                result = phase.apply(narrowed)
            except InstallerError as exc:
                self._cluster_failed(cluster.name, name, exc.message, exc)
                per[cluster.name] = "failed"
                messages.append(
                    exc.message if len(ctx.inventory.clusters) == 1
                    else f"{cluster.name}: {exc.message}"
                )  # fmt: skip
                continue
            state: PhaseState = "ok" if result.ok else "failed"
            journal.cluster_finished(cluster.name, name, state, len(result.changes), result.message)
            per[cluster.name] = state
            messages.append(
                result.message if len(ctx.inventory.clusters) == 1
                else f"{cluster.name}: {result.message}"
            )  # fmt: skip
            if result.changes:
                self.changed_in[cluster.name].add(name)
                changes += len(result.changes)
            if result.status is Status.FAILED:
                log.info("phase %s failed on cluster %s: %s", name, cluster.name, result.message)
                self.failed[cluster.name] = _ClusterFailure(name, result.message, None)
        outcome = self._phase_outcome(name, per, changes, messages, self.clock() - started)
        if started_any:
            self._journal_phase(name, per, digests, changes, outcome.message)
        self.report.outcomes.append(outcome)
        ctx.emit(Event("phase_finished", name, outcome.message, outcome.as_dict()))

    def _cluster_failed(self, cluster: str, phase: str, message: str, exc: InstallerError) -> None:
        self.journal.cluster_finished(cluster, phase, "failed", 0, message)
        self.failed[cluster] = _ClusterFailure(phase, message, exc)
        self.ctx.emit(
            Event(
                "error",
                phase,
                f"cluster {cluster}: {message}",
                {"cluster": cluster, "exit_code": int(exc.exit_code)},
            )
        )

    def _phase_outcome(
        self, name: str, per: dict[str, str], changes: int, messages: list[str], seconds: float
    ) -> PhaseOutcome:
        states = set(per.values())
        if "failed" in states:
            status = "failed"
        elif states <= {"done"}:
            status = "done"
        elif states <= {"skipped"}:
            status = "skipped"
        else:
            status = "ok"
        if status == "done":
            message = "finished in the previous attempt with the same inputs"
        elif status == "skipped":
            message = f"not run: {self.failed_clusters()}"
        else:
            message = "; ".join(messages)
        clusters = per if len(per) > 1 else {}
        return PhaseOutcome(name, status, changes, message, seconds, clusters)

    def _journal_phase(
        self, name: str, per: dict[str, str], digests: list[str], changes: int, message: str
    ) -> None:
        """The phase's entry over all clusters (status, drift views)."""
        state: PhaseState = "failed" if "failed" in per.values() else "ok"
        entry = self.journal.data.phases[name]
        self.journal.data.phases[name] = entry.model_copy(
            update={"inputs_hash": inputs_hash(digests)}
        )
        self.journal.phase_finished(name, state, changes, message)

    def failed_clusters(self) -> str:
        """Which clusters failed, where: `cluster infer failed in storage`."""
        return "; ".join(f"cluster {c} failed in {f.phase}" for c, f in self.failed.items())

    def raise_cluster_error(self) -> None:
        """After the run: a cluster that failed with an error fails the run with that error's
        exit code, naming every failed cluster and the clusters that completed."""
        errors = [(c, f) for c, f in self.failed.items() if f.error is not None]
        if not errors:
            return
        done = [c.name for c in self.ctx.inventory.clusters if c.name not in self.failed]
        first = errors[0][1].error
        assert first is not None
        if len(self.ctx.inventory.clusters) == 1:
            raise first  # the site's one cluster: the error as the phase raised it
        parts = [f"cluster {c}: {f.phase}: {f.message}" for c, f in self.failed.items()]
        tail = f" (cluster {', '.join(done)} completed its phases)" if done else ""
        raise type(first)("; ".join(parts) + tail, remedy=first.remedy)


def removable(phases: Mapping[str, Phase], names: list[str]) -> list[Removable]:
    """The selected phases that can be taken back, in reverse install order."""
    return [p for n in reversed(names) if isinstance(p := phases[n], Removable)]


def _scoped(
    ctx: PhaseContext, phases: Mapping[str, Phase], names: list[str], clusters: list[str] | None
) -> list[tuple[Removable, PhaseContext]]:
    """What destroy takes back: every selected removable phase on the whole site, or with
    `clusters`, the cluster phases only, each on one of those clusters at a time."""
    if clusters is None:
        return [(p, ctx) for p in removable(phases, names)]
    return [
        (p, ctx.for_cluster(c))
        for c in clusters
        for p in removable(phases, names)
        if p.name in CLUSTER_PHASES
    ]


def destroy_plan(
    ctx: PhaseContext,
    phases: Mapping[str, Phase],
    names: list[str],
    *,
    purge: bool,
    clusters: list[str] | None = None,
) -> list[PhasePlan]:
    """What `destroy()` would remove, phase by phase in reverse order."""
    return [p.destroy_plan(c, purge=purge) for p, c in _scoped(ctx, phases, names, clusters)]


def destroy(
    ctx: PhaseContext,
    phases: Mapping[str, Phase],
    names: list[str],
    journal: Journal,
    *,
    purge: bool = False,
    clusters: list[str] | None = None,
) -> BootstrapReport:
    """Take the site back in reverse order; stop at the first failure (re-run continues).

    With `clusters` (`destroy --cluster`), only the cluster phases, on those clusters only: the
    hub, the other clusters and the journal's site phases stay as they are."""
    report = BootstrapReport()
    for phase, scoped in _scoped(ctx, phases, names, clusters):
        where = f" on cluster {scoped.cluster}" if scoped.cluster else ""
        ctx.emit(Event("phase_started", phase.name, f"destroying{where}"))
        result = phase.destroy(scoped, purge=purge)
        outcome = PhaseOutcome(phase.name, str(result.status), len(result.changes), result.message)
        if scoped.cluster:
            outcome.clusters = {scoped.cluster: str(result.status)}
        report.outcomes.append(outcome)
        ctx.emit(Event("phase_finished", phase.name, result.message, outcome.as_dict()))
        if not result.ok:
            journal.data.bootstrap = "failed"
            journal.save()
            return report
        if scoped.cluster:
            journal.forget_cluster(scoped.cluster, [phase.name])
            continue
        journal.data.phases.pop(phase.name, None)
        for entries in journal.data.clusters.values():
            entries.pop(phase.name, None)
        journal.data.clusters = {c: e for c, e in journal.data.clusters.items() if e}
        journal.save()
    if clusters is None:
        journal.data.bootstrap = "none"
        journal.save()
    return report


STACK_PHASES = CLUSTER_PHASES
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
            # The cluster's own entry; a journal from before per-cluster entries has the
            # phase's only.
            entry = (
                data.clusters.get(cluster.name, {}).get(name)
                if data.clusters
                else data.phases.get(name)
            )
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
