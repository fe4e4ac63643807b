"""The cluster phases (nodes, storage, dns, keycloak, platform): one Pulumi stack per cluster.

Each phase runs its component's stack for every cluster of the inventory through the Pulumi
engine: `plan()` is a preview, `apply()` an update, `destroy()` a destroy. A failed update raises
the engine's `FailedError`, which the runner journals; the next bootstrap resumes here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from installer.engines.pulumi import PulumiEngine, StackEvent, StackSummary
from installer.phases.base import (
    Action,
    Change,
    Event,
    PhaseContext,
    PhasePlan,
    PhaseResult,
    Status,
)
from installer.stacks import ComponentName, StackInput
from installer.stacks.inputs import NodeMemo, stack_input
from installer.stacks.nodemarks import NODE_PREFIX
from installer.stacks.storage import ChartSource

_ACTIONS: dict[str, Action] = {
    "create": "create",
    "update": "update",
    "delete": "delete",
    "replace": "replace",
    "create-replacement": "replace",
    "delete-replaced": "replace",
    "discard": "delete",
    "import": "create",
}


class StackPhase:
    """One component's stacks, one per cluster."""

    def __init__(self, component: ComponentName, backend_url: str | None = None) -> None:
        self.name: str = component
        self.component: ComponentName = component
        self.backend_url = backend_url
        """`installer stacks --backend-url`; the state folder's file backend when None."""

    def _engine(self, ctx: PhaseContext) -> PulumiEngine:
        return PulumiEngine(
            state=ctx.state,
            backend_url=self.backend_url,
            bin_dir=ctx.inventory.site.pulumi_bin_dir,
            guarded=ctx.inventory.site.airgapped,
        )

    def _sink(self, ctx: PhaseContext) -> Any:
        def forward(event: StackEvent) -> None:
            if event.kind == "step" and event.op not in ("same", "read") and event.urn:
                ctx.emit(Event("step", self.name, f"{event.op} {event.urn.rsplit('::', 1)[-1]}"))
            elif event.kind in ("failed", "error") and event.message:
                ctx.emit(Event("error", self.name, event.message))

        return forward

    def _changes(self, summary: StackSummary) -> list[Change]:
        target = f"stack/{summary.component}/{summary.stack}"
        changes: list[Change] = []
        for step in summary.changed:
            action = _ACTIONS.get(step.op, "update")
            nodes = [d for d in step.diffs if d.startswith(NODE_PREFIX)]
            if nodes and len(nodes) == len(step.diffs):
                # The nodes stack's one resource: a change per node it changes.
                changes += [
                    Change(target=target, action=action, kind=step.type, name=step.name, detail=d)
                    for d in nodes
                ]
                continue
            changes.append(
                Change(
                    target=target,
                    action=action,
                    kind=step.type,
                    name=step.name,
                    # An update with no changed input: the provider found the live object
                    # drifted (the Keycloak realm compares what Keycloak holds).
                    detail=", ".join(step.diffs) or ("drifted" if step.op == "update" else ""),
                )
            )
        return changes

    def applies(self, ctx: PhaseContext) -> bool:
        """Every cluster has every component."""
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        """The stack arguments per cluster (secrets are kept apart and are not hashed)."""
        return {
            cluster.name: stack_input(
                self.component, ctx.inventory, cluster, ctx.state, _nodes(ctx)
            ).args.model_dump(mode="json")
            for cluster in ctx.clusters()
        }

    def run(self, ctx: PhaseContext, action: str, on_event: Any = None) -> list[StackSummary]:
        """`action` (preview, up, refresh, destroy) on the stack of each cluster of the call, in
        order: what bootstrap's phases and `installer stacks` both run. Engine events go to
        `on_event`, else to the context as the phase's steps."""
        engine = self._engine(ctx)
        summaries = []
        for cluster in ctx.clusters():
            si = stack_input(self.component, ctx.inventory, cluster, ctx.state, _nodes(ctx))
            ctx.step(self.name, f"{action} {self.component}/{cluster.name}")
            summaries.append(getattr(engine, action)(si, on_event=on_event or self._sink(ctx)))
        return summaries

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """A preview of every cluster's stack.

        A stack whose charts come from the site's hub cannot be previewed before the hub exists
        (Helm reads the chart, over TLS, with the site CA): on a site the installer has not
        provisioned yet (no site CA in the state folder) its plan says so instead of failing,
        and the preview comes with the plan after `auxvm` has run."""
        plan = PhasePlan(self.name)
        for cluster in ctx.clusters():
            si = stack_input(self.component, ctx.inventory, cluster, ctx.state, _nodes(ctx))
            missing = _hub_ca_missing(si)
            if missing is None:
                summaries = self.run(ctx.for_cluster(cluster.name), "preview")
                plan.changes.extend(c for s in summaries for c in self._changes(s))
            else:
                plan.changes.append(
                    Change(
                        f"stack/{self.component}/{si.stack}",
                        "create",
                        "stack",
                        self.component,
                        "its charts come from the hub: previewed once auxvm has provisioned it",
                    )
                )
                plan.notes.append(
                    f"{self.component}/{cluster.name}: not previewed: the site CA ({missing})"
                    " does not exist yet; bootstrap provisions the hub (auxvm) first"
                )
        return plan

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """`pulumi up` of every cluster's stack; a second run changes nothing."""
        summaries = self.run(ctx, "up")
        changes = [c for s in summaries for c in self._changes(s)]
        stacks = ", ".join(f"{s.component}/{s.stack}" for s in summaries)
        return PhaseResult(
            self.name,
            Status.OK,
            changes,
            message=f"{len(changes)} resource change(s) in {stacks}",
            details={"stacks": [s.as_dict() for s in summaries]},
        )

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        """The stacks' resources, all of which destroy removes."""
        return PhasePlan(
            self.name,
            notes=[
                f"destroy the {self.component} stack of cluster {c.name} (every resource it"
                " created; labels and taints the installer did not set stay)"
                for c in ctx.clusters()
            ],
        )

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        """`pulumi destroy` of every cluster's stack."""
        summaries = self.run(ctx, "destroy")
        changes = [c for s in summaries for c in self._changes(s)]
        return PhaseResult(self.name, Status.OK, changes, message=f"{len(changes)} removed")


def _chart_sources(value: Any) -> list[ChartSource]:
    """Every chart source in a stack's arguments."""
    if isinstance(value, ChartSource):
        return [value]
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return [s for name in fields for s in _chart_sources(getattr(value, name))]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _chart_sources(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _chart_sources(item)]
    return []


def _hub_ca_missing(si: StackInput) -> str | None:
    """The CA file a chart source of the stack names and that does not exist, if any."""
    for source in _chart_sources(si.args):
        if not Path(source.ca_file).is_file():
            return source.ca_file
    return None


def _nodes(ctx: PhaseContext) -> NodeMemo:
    """The run's node reader: each cluster's nodes read once per run."""
    memo: NodeMemo = ctx.facts.setdefault("nodes", NodeMemo())
    return memo


def storage_phase() -> StackPhase:
    """OpenEBS and the StorageClasses."""
    return StackPhase("storage")


def dns_phase() -> StackPhase:
    """Ingress exposure and the wildcard records."""
    return StackPhase("dns")


def keycloak_phase() -> StackPhase:
    """Keycloak and the platform's realm and client."""
    return StackPhase("keycloak")


def platform_phase() -> StackPhase:
    """The job and app controllers."""
    return StackPhase("platform")
