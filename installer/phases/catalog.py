"""The phases bootstrap knows, their order and dependencies, declared once.

`REQUIRES` drives `--from` / `--only` checks and resume: when a phase re-runs and changes
something, every phase that depends on it re-runs too, even if its own inputs did not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module

from installer.errors import BadInputError
from installer.phases.base import PHASE_ORDER, Phase

REQUIRES: Mapping[str, tuple[str, ...]] = {
    "preflight": (),
    "auxvm": ("preflight",),
    "airgap_load": ("auxvm",),
    "nodes": ("preflight", "auxvm"),  # the nodes trust the site CA and pull from the hub
    "storage": ("nodes", "airgap_load"),  # the OpenEBS chart comes from the hub
    "dns": ("auxvm",),
    "keycloak": ("storage", "dns"),
    "platform": ("nodes", "airgap_load", "keycloak"),
    "verify": ("platform",),
}

CLUSTER_PHASES = ("nodes", "storage", "dns", "keycloak", "platform")
"""Phases that work on each cluster apart (one Pulumi stack per cluster and component): the
runner runs them once per cluster (`PhaseContext.cluster`), journals each cluster's outcome, and
`destroy --cluster` takes them back from one cluster."""

ALWAYS_RUN = frozenset({"preflight", "verify"})
"""Checks look at the site as it is now: they run on every attempt, resumed or not."""

# Where each phase's implementation lives: `installer.phases.<module>:<factory>`.
_IMPLEMENTATIONS: Mapping[str, str] = {
    "preflight": "installer.phases.preflight:phase",
    "auxvm": "installer.phases.auxvm:phase",
    "airgap_load": "installer.phases.airgap_load:phase",
    "nodes": "installer.phases.nodes:phase",
    "storage": "installer.phases.stacks:storage_phase",
    "dns": "installer.phases.stacks:dns_phase",
    "keycloak": "installer.phases.stacks:keycloak_phase",
    "platform": "installer.phases.stacks:platform_phase",
    "verify": "installer.phases.verify:phase",
}


def closure(name: str) -> set[str]:
    """Every phase `name` depends on, directly or not."""
    seen: set[str] = set()
    todo = list(REQUIRES[name])
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(REQUIRES[dep])
    return seen


def select(
    only: list[str] | None = None, start: str | None = None, skip: list[str] | None = None
) -> list[str]:
    """The phases to run, in order, from `--only`, `--from` and `--skip`."""
    for name in [*(only or []), *(skip or []), *([start] if start else [])]:
        if name not in PHASE_ORDER:
            raise BadInputError(
                f"unknown phase '{name}'", remedy=f"phases are: {', '.join(PHASE_ORDER)}"
            )
    if only and start:
        raise BadInputError("--only and --from do not combine", remedy="use one of them")
    names = list(PHASE_ORDER)
    if start:
        names = names[names.index(start) :]
    if only:
        names = [n for n in names if n in only]
    return [n for n in names if n not in (skip or [])]


def load_phases(names: list[str]) -> dict[str, Phase]:
    """Import the implementations of `names`."""
    phases: dict[str, Phase] = {}
    for name in names:
        module_name, _, attr = _IMPLEMENTATIONS[name].partition(":")
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise BadInputError(
                f"phase '{name}' is not part of this installer version",
                remedy=f"skip it with --skip {name}",
            ) from None
        factory: Callable[[], Phase] = getattr(module, attr)
        phases[name] = factory()
    return phases
