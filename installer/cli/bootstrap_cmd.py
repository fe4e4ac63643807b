"""`installer bootstrap`, `installer plan`, `installer status`: the main job and its views."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from installer import bootstrap as runner
from installer.cli.progress import event_printer, plan_payload, print_plan
from installer.cli.render import emit_json, is_json, out
from installer.cli.state import (
    STATE,
    AllowDowngradeOption,
    InventoryOption,
    OutputOption,
    ReplaceChangedOption,
    begin,
    selected_clusters,
)
from installer.errors import BadInputError, ExitCode
from installer.inventory import Inventory, load_inventory
from installer.journal import Journal
from installer.lock import site_lock
from installer.phases.base import PHASE_ORDER, Phase, PhaseContext
from installer.phases.catalog import load_phases, select
from installer.state import StateDir

if TYPE_CHECKING:
    from installer.airgap.archive import Bundle

OnlyOption = Annotated[
    list[str] | None, typer.Option("--only", help="Run only this phase (repeatable).")
]
FromOption = Annotated[str | None, typer.Option("--from", help="Start at this phase.")]
SkipOption = Annotated[
    list[str] | None, typer.Option("--skip", help="Leave this phase out (repeatable).")
]
BundleOption = Annotated[
    Path | None, typer.Option("--bundle", help="Air-gap bundle to load (air-gapped sites).")
]
VerifyKeyOption = Annotated[
    Path | None, typer.Option("--verify-key", help="The bundle's ed25519 public key (PEM).")
]


def _selected(
    inventory: Path, only: list[str] | None, start: str | None, skip: list[str] | None
) -> tuple[Inventory, list[str], dict[str, Phase]]:
    """The inventory, the selected phase names in order, and their implementations."""
    inv = load_inventory(inventory)
    names = select(only, start, skip)
    return inv, names, load_phases(names)


def opened_bundle(bundle: Path | None, verify_key: Path | None) -> Bundle | None:
    """`--bundle` opened once, its signature checked with `--verify-key`, before any phase."""
    if bundle is None:
        return None
    if verify_key is None:
        raise BadInputError(
            "--bundle needs --verify-key (the bundle's ed25519 public key)",
            remedy="pass --verify-key bundle-verify.pem",
        )
    from installer.airgap.archive import open_bundle  # zstandard: only when a bundle is given

    return open_bundle(bundle, verify_key)


def _context(
    inv: Inventory,
    inventory: Path,
    dry_run: bool,
    bundle: Path | None = None,
    verify_key: Path | None = None,
    allow_downgrade: bool = False,
    replace_changed: bool = False,
) -> PhaseContext:
    assert STATE.run is not None
    return PhaseContext(
        inventory=inv,
        inventory_path=inventory,
        bundle=opened_bundle(bundle, verify_key),
        allow_downgrade=allow_downgrade,
        replace_changed=replace_changed,
        state=StateDir(inv.site.state_dir),
        run_dir=STATE.run.folder,
        emit=runner.EventLog(STATE.run.folder, event_printer),
        dry_run=dry_run,
    )


def bootstrap(
    inventory: InventoryOption,
    only: OnlyOption = None,
    start: FromOption = None,
    skip: SkipOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; for CI.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the journal: run every phase again.")
    ] = False,
    bundle: BundleOption = None,
    verify_key: VerifyKeyOption = None,
    allow_downgrade: AllowDowngradeOption = False,
    replace_changed: ReplaceChangedOption = False,
    output: OutputOption = None,
) -> None:
    """Install the site: preflight, VM, bundle, nodes, storage, DNS, Keycloak, platform, verify."""
    begin("bootstrap", output)
    inv, names, phases = _selected(inventory, only, start, skip)
    state = StateDir(inv.site.state_dir)
    with site_lock(state.root, f"bootstrap --inventory {inventory}"):
        ctx = _context(
            inv, inventory, dry_run, bundle, verify_key, allow_downgrade, replace_changed
        )
        if dry_run or not yes:
            plans = runner.plan(ctx, phases, names)
            if not is_json():
                print_plan(plans)
            if dry_run:
                if is_json():
                    emit_json({"ok": True, "dry_run": True, **plan_payload(plans)})
                return
            if is_json() or not sys.stdin.isatty():
                raise BadInputError(
                    "bootstrap changes the site and asks first; there is no terminal to ask on",
                    remedy="pass --yes (after reviewing `installer plan`), or --dry-run",
                )
            if not typer.confirm("Apply this plan?", default=False):
                raise typer.Exit(int(ExitCode.FAILED))
        report = runner.apply(ctx, phases, names, Journal(state.journal), resume=not restart)
    if is_json():
        emit_json(
            {
                "event": "summary",
                "ok": report.ok,
                "changes": report.changes,
                "phases": [o.as_dict() for o in report.outcomes],
            }
        )
    else:
        verdict = "[green]bootstrap ok[/]" if report.ok else "[red]bootstrap failed[/]"
        folder = STATE.run.folder if STATE.run else "-"
        out.print(f"{verdict}: {report.changes} change(s); log in {folder}")
    if not report.ok:
        raise typer.Exit(int(ExitCode.FAILED))


def plan(
    inventory: InventoryOption,
    only: OnlyOption = None,
    start: FromOption = None,
    skip: SkipOption = None,
    expect_no_changes: Annotated[
        bool,
        typer.Option("--expect-no-changes", help="Exit 1 when anything would change (drift)."),
    ] = False,
    bundle: BundleOption = None,
    verify_key: VerifyKeyOption = None,
    output: OutputOption = None,
) -> None:
    """Show what bootstrap would change, phase by phase, changing nothing."""
    begin("plan", output)
    inv, names, phases = _selected(inventory, only, start, skip)
    ctx = _context(inv, inventory, True, bundle, verify_key)
    if is_json():
        ctx.emit = runner.EventLog(ctx.run_dir)  # one JSON document, not an event stream
    plans = runner.plan(ctx, phases, names)
    payload = plan_payload(plans)
    if is_json():
        emit_json({"ok": True, **payload})
    else:
        print_plan(plans)
    if expect_no_changes and payload["changes"]:
        raise typer.Exit(int(ExitCode.FAILED))


def status(
    inventory: InventoryOption,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Also plan every phase against the live site and show the drift."
        ),
    ] = False,
    output: OutputOption = None,
) -> None:
    """The last outcome of every phase and cluster, the versions deployed; drift with
    --refresh."""
    begin("status", output)
    inv = load_inventory(inventory)
    data = Journal(StateDir(inv.site.state_dir).journal).data
    plans = None
    if refresh:
        phases = load_phases(list(PHASE_ORDER))
        ctx = _context(inv, inventory, True)
        if is_json():
            ctx.emit = runner.EventLog(ctx.run_dir)  # one JSON document, not an event stream
        plans = runner.plan(ctx, phases, list(PHASE_ORDER))
    view = runner.site_status(inv, data, plans)
    if is_json():
        emit_json({"ok": True, **view})
        return
    out.print(f"last bootstrap: {view['bootstrap']}")
    table = Table(title="phases")
    columns = ["phase", "state", "changes", "finished", *(["drift"] if refresh else []), "message"]
    for col in columns:
        table.add_column(col)
    for row in view["phases"]:
        drift = [] if not refresh else [_drift(row.get("drift"))]
        table.add_row(
            row["phase"],
            row["state"],
            str(row["changes"]),
            row["finished"] or "-",
            *drift,
            row["message"],
        )
    out.print(table)
    per_cluster = Table(title="clusters")
    per_cluster.add_column("cluster")
    for name in runner.STACK_PHASES:
        per_cluster.add_column(name)
    for cluster, phases_of in view["clusters"].items():
        cells = []
        for name in runner.STACK_PHASES:
            item = phases_of[name]
            cell = item["state"]
            if "drift" in item:
                cell += f", {_drift(item['drift'])}"
            cells.append(cell)
        per_cluster.add_row(cluster, *cells)
    out.print(per_cluster)
    versions = view["versions"]
    if versions:
        out.print("deployed: " + ", ".join(f"{k} {v}" for k, v in versions.items()), markup=False)


def _drift(count: int | None) -> str:
    if count is None:
        return "-"
    return "no drift" if count == 0 else f"{count} drifted"


def destroy(
    inventory: InventoryOption,
    only: OnlyOption = None,
    skip: SkipOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; for CI.")] = False,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the VM's data (images, charts, wheels).")
    ] = False,
    cluster: Annotated[
        list[str] | None,
        typer.Option(
            "--cluster",
            help="Take back only this cluster's side (repeatable): its stacks, labels, taints"
            " and node runtime files; the hub and the other clusters stay.",
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Take the site back in reverse order; shows what goes and asks first."""
    begin("destroy", output)
    inv, names, phases = _selected(inventory, only, None, skip)
    chosen = {c.name for c in selected_clusters(inv, cluster)} if cluster else None
    clusters = [c.name for c in inv.clusters if c.name in chosen] if chosen else None
    if clusters is not None and purge:
        raise BadInputError(
            "--purge deletes the hub's data, which every cluster shares; --cluster leaves the"
            " hub as it is",
            remedy="drop --purge, or --cluster to take back the whole site",
        )
    state = StateDir(inv.site.state_dir)
    with site_lock(state.root, f"destroy --inventory {inventory}"):
        ctx = _context(inv, inventory, dry_run=False)
        plans = runner.destroy_plan(ctx, phases, names, purge=purge, clusters=clusters)
        if not is_json():
            print_plan(plans)
        if not yes:
            if is_json() or not sys.stdin.isatty():
                raise BadInputError(
                    "destroy removes the platform and asks first; there is no terminal to ask on",
                    remedy="pass --yes",
                )
            if not typer.confirm("Destroy all of this?", default=False):
                raise typer.Exit(int(ExitCode.FAILED))
        report = runner.destroy(
            ctx, phases, names, Journal(state.journal), purge=purge, clusters=clusters
        )
    if is_json():
        emit_json(
            {"event": "summary", "ok": report.ok, "phases": [o.as_dict() for o in report.outcomes]}
        )
    if not report.ok:
        raise typer.Exit(int(ExitCode.FAILED))
