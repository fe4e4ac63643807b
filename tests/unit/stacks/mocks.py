"""Pulumi mocks that record every resource a program registers (the one faked seam)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass
class Registered:
    """One resource the program created."""

    type: str
    name: str
    inputs: dict[str, Any]
    provider: str | None


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every registration with its inputs as outputs, and records it."""

    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], Any]:
        return {}, None

    def of_type(self, typ: str) -> list[Registered]:
        """Resources of one Pulumi type, in registration order."""
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str) -> Registered:
        """The resource registered under `name`."""
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"{len(found)} resources named {name}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        """Every registered name."""
        return [r.name for r in self.resources]


def run_program(
    build: Callable[[], Any], *, config: dict[str, str] | None = None, project: str = "test"
) -> RecordingMocks:
    """Run `build` under mocks; return the recorder once every registration finished."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack="test", preview=False)
    pulumi.runtime.set_all_config(config or {})

    @pulumi.runtime.test
    def run() -> Any:
        return build()

    try:
        run()
    finally:
        pulumi.runtime.set_all_config({})
    return mocks


SECRET_SIG = "4dabf18193072939515e22adb298388d"
"""Key of Pulumi's special-signature envelope; its value marks a secret."""


def unwrap(value: Any) -> tuple[Any, bool]:
    """A value as the engine receives it, without its secret envelope; and whether it had one."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return value["value"], True
    return value, False
