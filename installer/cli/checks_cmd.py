"""`installer preflight` and `installer verify`: run checks, show the report, exit 1 on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from installer.checks import Report, Status, run_preflight, run_verify
from installer.cli.render import emit_json, is_json, out
from installer.cli.state import STATE, InventoryOption, OutputOption, begin
from installer.errors import ExitCode
from installer.inventory import load_inventory

StrictOption = Annotated[bool, typer.Option("--strict", help="Warnings fail the run too (exit 1).")]
_STYLE = {
    Status.PASS: "green",
    Status.FAIL: "bold red",
    Status.WARN: "yellow",
    Status.INFO: "cyan",
    Status.SKIP: "dim",
}


def render_report(report: Report, inventory: Path) -> None:
    """The report as a table (people) or one JSON document (machines)."""
    path = report.write(STATE.run.folder) if STATE.run is not None else None
    if is_json():
        emit_json({**report.as_dict(), "inventory": str(inventory), "report_file": str(path)})
        return
    table = Table(title=f"{report.kind}: {inventory}", title_justify="left", expand=False)
    for column in ("status", "check", "target", "message"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        table.add_row(
            Text(str(result.status), style=_STYLE[result.status]),
            result.id,
            result.target,
            Text(result.message),
        )
    out.print(table)
    for result in report.results:
        if result.status in (Status.FAIL, Status.WARN) and result.remedy:
            out.print(Text(f"{result.id} [{result.target}]: {result.remedy}", style="dim"))
    counts = ", ".join(f"{n} {s}" for s, n in report.summary().items() if n)
    verdict = "[green]ok[/]" if report.ok else "[bold red]failed[/]"
    strict = " (strict: warnings fail)" if report.strict else ""
    out.print(f"{report.kind} {verdict}: {counts}{strict}")


def _finish(report: Report, inventory: Path) -> None:
    render_report(report, inventory)
    if not report.ok:
        raise typer.Exit(int(ExitCode.FAILED))


def preflight(
    inventory: InventoryOption,
    strict: StrictOption = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="The air-gap bundle to load: the VM must have room for it expanded."
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Check the site before anything changes. Exit 1 when a check fails."""
    begin("preflight", output)
    inv = load_inventory(inventory)
    size = None
    if bundle is not None:
        from installer.airgap.archive import bundle_size  # zstandard: only with a bundle

        size = bundle_size(bundle)  # every part; BadInputError when there is none
    _finish(run_preflight(inv, bundle_size=size, strict=strict), inventory)


def verify(
    inventory: InventoryOption, strict: StrictOption = False, output: OutputOption = None
) -> None:
    """Prove the install works (acceptance checks). Exit 1 when a check fails."""
    begin("verify", output)
    inv = load_inventory(inventory)
    _finish(run_verify(inv, strict=strict), inventory)
