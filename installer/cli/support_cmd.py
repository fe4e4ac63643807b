"""`installer support-bundle`: one tarball for support, secrets left out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from installer.checks.support_bundle import gather
from installer.cli.render import emit_json, is_json, out
from installer.cli.state import STATE, OutputOption, begin
from installer.inventory import Inventory, load_inventory


def support_bundle(
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            "-i",
            help="The site's inventory (adds journal, nodes).",
            envvar="INSTALLER_INVENTORY",
        ),
    ] = None,
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-f", help="Where to write the tarball.")
    ] = None,
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="How many recent runs to include.")
    ] = 5,
    output: OutputOption = None,
) -> None:
    """Pack logs, events, reports, journal, versions, node summary and the redacted inventory."""
    state = begin("support-bundle", output)
    inv: Inventory | None = load_inventory(inventory) if inventory is not None else None
    current = state.run.folder if state.run is not None else None
    bundle = gather(inv, inventory, STATE.log_dir, runs=runs, current_run=current)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    site = inv.site.name if inv is not None else "site"
    path = bundle.write(output_file or Path(f"support-{site}-{stamp}.tar.gz"))
    if is_json():
        emit_json(
            {
                "ok": True,
                "file": str(path),
                "members": sorted(bundle.members),
                "notes": bundle.notes,
            }
        )
        return
    out.print(f"[green]wrote[/] {path} ({len(bundle.members)} files, {path.stat().st_size} bytes)")
    for line in bundle.notes[1:]:
        out.print(f"  note: {line}", markup=False)
