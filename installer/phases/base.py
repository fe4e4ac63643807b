"""What a phase is: a named step of the bootstrap with `plan()` and `apply()` and a typed result.

A phase never prints. It reports progress through `PhaseContext.emit` (events the CLI renders as
progress for people or JSON lines for CI) and returns a `PhaseResult`. A failure the operator
must act on is a result with status `failed` (or an `InstallerError` for bad input and
environment problems); the runner records it in the journal and stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from installer.inventory import Inventory
from installer.inventory.models import Cluster
from installer.state import StateDir

if TYPE_CHECKING:
    from installer.airgap.archive import Bundle

PHASE_ORDER = (
    "preflight",
    "auxvm",
    "airgap_load",
    "nodes",
    "storage",
    "dns",
    "keycloak",
    "platform",
    "verify",
)
"""Every phase, in the order bootstrap runs them."""


class Status(StrEnum):
    """How a phase ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


Action = Literal["create", "update", "delete", "replace", "run"]
EventKind = Literal[
    "phase_started", "phase_finished", "step", "change", "progress", "warning", "error"
]


@dataclass(frozen=True)
class Change:
    """One thing a phase would change (plan) or changed (apply)."""

    target: str
    """Where: `vm`, `cluster/<name>`, `stack/<component>/<cluster>`, `hub/registry`."""
    action: Action
    kind: str
    """What sort of thing: `task`, `kubernetes:core/v1:Node`, `image`, `chart`."""
    name: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "target": self.target,
            "action": self.action,
            "kind": self.kind,
            "name": self.name,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Event:
    """Progress of a run: what the CLI shows and what `--output json` streams, one per line."""

    kind: EventKind
    phase: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "time": round(self.time, 3),
            "event": self.kind,
            "phase": self.phase,
            "message": self.message,
            **({"data": self.data} if self.data else {}),
        }


EventSink = Callable[[Event], None]


@dataclass
class PhaseContext:
    """Everything a phase may use. Built once per run by the runner."""

    inventory: Inventory
    inventory_path: Path
    state: StateDir
    run_dir: Path
    emit: EventSink
    dry_run: bool = False
    bundle: Bundle | None = None
    """The air-gap bundle given to bootstrap (`--bundle`, `--verify-key`), opened once by the
    CLI (`open_bundle`): preflight's disk check, the hub's programs and the `airgap_load` phase
    use it."""
    allow_downgrade: bool = False
    """`--allow-downgrade`: load a bundle of an older release than the site has loaded."""
    replace_changed: bool = False
    """`--replace-changed`: charts the hub serves with other bytes are replaced."""
    cluster: str | None = None
    """The one cluster a cluster phase works on in this call: the runner runs each cluster phase
    once per cluster (`installer.bootstrap`), so that one cluster's failure stops that cluster
    only. None: every cluster of the inventory."""
    facts: dict[str, Any] = field(default_factory=dict)
    """What the run read of the live site, kept for the rest of the run: each cluster's nodes
    are listed once, for the plan, the inputs' hashes and every phase (the contexts the runner
    narrows to one cluster share it). Only what the installer does not change is kept: the
    nodes' names, GPU labels and allocatable resources that pools and presets resolve against."""

    def clusters(self) -> list[Cluster]:
        """The clusters this call works on, in inventory order."""
        return [c for c in self.inventory.clusters if self.cluster in (None, c.name)]

    def for_cluster(self, name: str) -> PhaseContext:
        """This context, narrowed to one cluster."""
        return replace(self, cluster=name)

    def step(self, phase: str, message: str, **data: Any) -> None:
        """Report a step of `phase`."""
        self.emit(Event("step", phase, message, data))


@dataclass
class PhasePlan:
    """What a phase would change; empty `changes` means nothing drifted."""

    phase: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """True when applying would change something."""
        return bool(self.changes)


@dataclass
class PhaseResult:
    """How `apply()` ended."""

    phase: str
    status: Status
    changes: list[Change] = field(default_factory=list)
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True unless the phase failed."""
        return self.status is not Status.FAILED


class Phase(Protocol):
    """A bootstrap phase. Implementations live in `installer/phases/<name>.py`."""

    name: str

    def applies(self, ctx: PhaseContext) -> bool:
        """False when the site does not need this phase (then it is skipped, not failed)."""
        ...

    def inputs(self, ctx: PhaseContext) -> Any:
        """The JSON-able part of the inventory (and other inputs) the phase reads.

        The journal stores its hash: a finished phase whose inputs did not change is not re-run
        on resume. Never include secret values (references are fine).
        """
        ...

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """What `apply()` would change, changing nothing."""
        ...

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Converge; a second call with nothing drifted changes nothing."""
        ...


@runtime_checkable
class Removable(Protocol):
    """A phase that can take back what it installed (`installer destroy`)."""

    name: str

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        """What `destroy()` would remove, removing nothing."""
        ...

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        """Remove what the phase installed; with `purge`, also the data it kept."""
        ...
