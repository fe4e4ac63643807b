"""What every command shares: the output mode, debug, the run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from installer.errors import BadInputError
from installer.inventory import Inventory
from installer.inventory.models import Cluster
from installer.runlog import DEFAULT_LOG_DIR, Run, start_run


class OutputFormat(StrEnum):
    """How results are printed."""

    TEXT = "text"
    JSON = "json"


@dataclass
class CliState:
    """Global options, set by the app callback and read by commands."""

    output: OutputFormat = OutputFormat.TEXT
    debug: bool = False
    log_dir: Path = DEFAULT_LOG_DIR
    run: Run | None = field(default=None)


STATE = CliState()
"""The one state of this process; the CLI runs one command per process."""


def begin(command: str, output: OutputFormat | None) -> CliState:
    """Start a command: apply its own `--output` (overrides the global one) and open the run."""
    if output is not None:
        STATE.output = output
    STATE.run = start_run(command, STATE.log_dir, debug=STATE.debug)
    return STATE


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output", "-o", help="text for people, json for machines (overrides the global option)."
    ),
]

ReplaceChangedOption = Annotated[
    bool,
    typer.Option(
        "--replace-changed",
        help="Replace the charts the hub serves under the release's names with other bytes"
        " (without it the load stops before pushing anything; wheels are never replaced).",
    ),
]
AllowDowngradeOption = Annotated[
    bool,
    typer.Option(
        "--allow-downgrade",
        help="Load a bundle of an older release than the site has loaded (refused otherwise).",
    ),
]

InventoryOption = Annotated[
    Path,
    typer.Option(
        "--inventory",
        "-i",
        help="The site's inventory file (onprem.yml).",
        envvar="INSTALLER_INVENTORY",
    ),
]


def selected_clusters(inv: Inventory, names: list[str] | None) -> list[Cluster]:
    """The inventory's clusters `--cluster` names (all when none), or bad input naming the
    unknown ones and the known ones."""
    if not names:
        return list(inv.clusters)
    known = {c.name: c for c in inv.clusters}
    missing = [n for n in names if n not in known]
    if missing:
        raise BadInputError(
            f"cluster {', '.join(missing)} is not in the inventory",
            remedy=f"clusters: {', '.join(known)}",
        )
    return [known[n] for n in names]
