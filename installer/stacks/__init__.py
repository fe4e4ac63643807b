"""The cluster stacks: one Pulumi project per component, one stack per cluster.

Each component is a `ComponentResource` with typed arguments (a pydantic model stored in the
stack config); `stacks/<component>/__main__.py` only calls the component's `program()`, and the
engine (`installer.engines.pulumi`) runs the same function inline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Literal

from pydantic import SecretStr

from installer.stacks.common import StackArgs, project_name

ComponentName = Literal["nodes", "storage", "dns", "keycloak", "platform"]

COMPONENTS: tuple[ComponentName, ...] = ("nodes", "storage", "dns", "keycloak", "platform")
"""Components in install order (destroy runs in reverse)."""


@dataclass(frozen=True)
class StackInput:
    """Everything one stack run needs: which stack, its arguments, its secrets."""

    component: ComponentName
    args: StackArgs
    secrets: dict[str, SecretStr] = field(default_factory=dict)

    @property
    def project(self) -> str:
        """Pulumi project name."""
        return project_name(self.component)

    @property
    def stack(self) -> str:
        """Pulumi stack name: the cluster's name."""
        return self.args.cluster


def program_of(component: ComponentName) -> Callable[[], None]:
    """The Pulumi program function of a component."""
    module = import_module(f"installer.stacks.{component}")
    program: Callable[[], None] = module.program
    return program
