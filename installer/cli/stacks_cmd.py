"""`installer stacks ...`: write the stacks' config, preview, up, refresh and destroy them."""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from installer.bootstrap import EventLog
from installer.cli.render import emit_json, err, is_json, out
from installer.cli.state import STATE, InventoryOption, OutputOption, begin, selected_clusters
from installer.engines.pulumi import PulumiEngine, StackEvent, StackSummary
from installer.errors import BadInputError, ExitCode, FailedError
from installer.inventory import Inventory, load_inventory
from installer.journal import Journal, inputs_hash
from installer.lock import site_lock
from installer.phases.base import PhaseContext
from installer.phases.stacks import StackPhase
from installer.stacks import COMPONENTS, ComponentName
from installer.stacks.inputs import builders, stack_input
from installer.state import StateDir

group = typer.Typer(help="The cluster stacks (Pulumi): config for hand runs, preview, up, destroy.")

HAND_RUN_ENV = (
    "PULUMI_BACKEND_URL",
    "PULUMI_CONFIG_PASSPHRASE_FILE",
    "PULUMI_HOME",
    "PULUMI_SKIP_UPDATE_CHECK",
    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION",
)

ClusterOption = Annotated[
    list[str] | None,
    typer.Option("--cluster", help="Cluster name (repeatable); every cluster when absent."),
]
ComponentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--component", "-c", help=f"Stack(s) to run, of {', '.join(COMPONENTS)}; all when absent."
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend-url",
        help="Pulumi backend; a file backend in the state folder when absent.",
        envvar="INSTALLER_PULUMI_BACKEND_URL",
    ),
]


def _components(names: list[str] | None) -> list[ComponentName]:
    ready = builders()
    if not names:
        return [c for c in COMPONENTS if c in ready]
    unknown = [n for n in names if n not in ready]
    if unknown:
        raise BadInputError(
            f"unknown stack {', '.join(unknown)}", remedy=f"stacks: {', '.join(ready)}"
        )
    return [c for c in COMPONENTS if c in names]


def _engine(inv: Inventory, backend_url: str | None) -> PulumiEngine:
    return PulumiEngine(
        state=StateDir(inv.site.state_dir),
        backend_url=backend_url,
        bin_dir=inv.site.pulumi_bin_dir,
        guarded=inv.site.airgapped,
    )


def _show_event(event: StackEvent) -> None:
    if is_json():
        return
    if event.kind == "done" and event.urn and event.op not in ("same", "read"):
        err.print(f"  {event.op:>8} {event.urn.rsplit('::', 1)[-1]}", markup=False)
    elif event.kind in ("failed", "error") and event.message:
        err.print(f"  [red]{event.kind}[/]: ", end="", markup=True)
        err.print(event.message, markup=False)


def _render(summaries: list[StackSummary]) -> None:
    if is_json():
        emit_json({"ok": True, "stacks": [s.as_dict() for s in summaries]})
        return
    table = Table(title_justify="left")
    for col in ("stack", "cluster", "action", "changes", "steps"):
        table.add_column(col)
    for s in summaries:
        steps = ", ".join(f"{st.op} {st.name}" for st in s.changed[:6])
        if len(s.changed) > 6:
            steps += f", ... ({len(s.changed)} in all)"
        table.add_row(s.component, s.stack, s.action, str(s.changes), steps or "-")
    out.print(table)
    for s in summaries:
        for what in s.recovered:
            out.print(f"[yellow]recovered[/] {s.component}/{s.stack}: ", end="", markup=True)
            out.print(what, markup=False)


@group.command("config")
def config(
    inventory: InventoryOption,
    cluster: ClusterOption = None,
    component: ComponentOption = None,
    stacks_dir: Annotated[
        Path, typer.Option("--stacks-dir", help="The folder holding one folder per stack.")
    ] = Path("stacks"),
    backend_url: BackendOption = None,
    output: OutputOption = None,
) -> None:
    """Write Pulumi.<cluster>.yaml in each stack folder (secrets encrypted) for `pulumi up`."""
    begin("stacks config", output)
    inv = load_inventory(inventory)
    engine = _engine(inv, backend_url)
    written: list[str] = []
    for item in selected_clusters(inv, cluster):
        for name in _components(component):
            si = stack_input(name, inv, item, engine.state)
            folder = stacks_dir / name
            engine.configure(si, project_dir=folder)
            written.append(str(folder / f"Pulumi.{si.stack}.yaml"))
    env = engine.env()
    # The same backend, passphrase, Pulumi home and offline switches as the installer's runs;
    # PATH: the installer's plugin launchers (dynamic provider, language host), then the CLI's.
    hand_env = {k: env[k] for k in HAND_RUN_ENV}
    prepend = [str(d) for d in engine.tool_dirs()]
    if is_json():
        emit_json({"ok": True, "written": written, "env": {**hand_env, "PATH": env["PATH"]}})
        return
    for path in written:
        out.print(f"[green]wrote[/] {path}", markup=True)
    out.print("To run a stack by hand:")
    for key, value in hand_env.items():
        # Never wrapped: the lines are meant to be pasted into a shell.
        out.print(f"  export {key}={shlex.quote(value)}", markup=False, soft_wrap=True)
    path = os.pathsep.join(map(shlex.quote, prepend))
    out.print(f"  export PATH={path}:$PATH", markup=False, soft_wrap=True)
    out.print(
        f"  cd {stacks_dir}/<stack> && pulumi stack select <cluster> && pulumi up",
        markup=False,
        soft_wrap=True,
    )


def _run(
    action: str,
    inventory: Path | Inventory,
    cluster: list[str] | None,
    component: list[str] | None,
    backend_url: str | None,
) -> list[StackSummary]:
    """`action` on the selected stacks, cluster by cluster, through the bootstrap phases' own
    code (`StackPhase.run`). What changes the site (up, refresh, destroy) holds the site lock,
    and up and destroy write each cluster's outcome to the journal, as bootstrap does: `status`
    shows them and a resumed bootstrap knows what they did."""
    inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
    path = inventory if isinstance(inventory, Path) else Path()
    order = _components(component)
    if action == "destroy":
        order = list(reversed(order))
    clusters = selected_clusters(inv, cluster)
    state = StateDir(inv.site.state_dir)
    assert STATE.run is not None
    ctx = PhaseContext(
        inventory=inv,
        inventory_path=path,
        state=state,
        run_dir=STATE.run.folder,
        emit=EventLog(STATE.run.folder),
    )
    lock = (
        nullcontext()
        if action == "preview"
        else site_lock(state.root, f"stacks {action} --inventory {path}")
    )
    summaries: list[StackSummary] = []
    with lock:
        journal = Journal(state.journal) if action in ("up", "destroy") else None
        for item in clusters:
            narrowed = ctx.for_cluster(item.name)
            for name in order:
                phase = StackPhase(name, backend_url)
                if not is_json():
                    err.print(f"{action} {name}/{item.name}", markup=False)
                summaries += _journaled(journal, phase, narrowed, action, summaries)
    return summaries


def _journaled(
    journal: Journal | None,
    phase: StackPhase,
    ctx: PhaseContext,
    action: str,
    before: list[StackSummary],
) -> list[StackSummary]:
    """One stack's run, its outcome in the journal (up: the cluster's entry of that phase;
    destroy: the entry goes)."""
    cluster = ctx.cluster
    assert cluster is not None
    if journal is not None and action == "up":
        journal.cluster_started(
            cluster, phase.name, inputs_hash(phase.inputs(ctx)), ctx.run_dir.name
        )
    try:
        done = phase.run(ctx, action, on_event=_show_event)
    except FailedError as exc:
        if journal is not None and action == "up":
            journal.cluster_finished(cluster, phase.name, "failed", 0, exc.message)
        finished = ", ".join(f"{s.component}/{s.stack}" for s in before) or "none"
        raise FailedError(
            f"{exc.message}\n(stacks finished before this one: {finished})",
            remedy=exc.remedy,
        ) from None
    if journal is not None and action == "up":
        changes = sum(s.changes for s in done)
        journal.cluster_finished(
            cluster, phase.name, "ok", changes, f"stacks up: {changes} resource change(s)"
        )
    elif journal is not None and action == "destroy":
        journal.forget_cluster(cluster, [phase.name])
    return done


@group.command("preview")
def preview(
    inventory: InventoryOption,
    cluster: ClusterOption = None,
    component: ComponentOption = None,
    backend_url: BackendOption = None,
    output: OutputOption = None,
) -> None:
    """Show what `stacks up` would change, per stack; changes nothing."""
    begin("stacks preview", output)
    _render(_run("preview", inventory, cluster, component, backend_url))


@group.command("up")
def up(
    inventory: InventoryOption,
    cluster: ClusterOption = None,
    component: ComponentOption = None,
    backend_url: BackendOption = None,
    output: OutputOption = None,
) -> None:
    """Converge the stacks in install order; exit 1 at the first failed stack."""
    begin("stacks up", output)
    _render(_run("up", inventory, cluster, component, backend_url))


@group.command("refresh")
def refresh(
    inventory: InventoryOption,
    cluster: ClusterOption = None,
    component: ComponentOption = None,
    backend_url: BackendOption = None,
    output: OutputOption = None,
) -> None:
    """Read the live cluster back into the stacks' state."""
    begin("stacks refresh", output)
    _render(_run("refresh", inventory, cluster, component, backend_url))


@group.command("destroy")
def destroy(
    inventory: InventoryOption,
    cluster: ClusterOption = None,
    component: ComponentOption = None,
    backend_url: BackendOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    output: OutputOption = None,
) -> None:
    """Remove what the stacks created, in reverse order (asks first)."""
    begin("stacks destroy", output)
    inv = load_inventory(inventory)
    selected_clusters(inv, cluster)
    _components(component)
    if not yes:
        if is_json() or not sys.stdin.isatty():
            raise BadInputError(
                "stacks destroy removes what the installer created and asks first;"
                " there is no terminal to ask on",
                remedy="pass --yes",
            )
        if not typer.confirm("Remove what the installer created in these clusters?"):
            raise typer.Exit(int(ExitCode.FAILED))
    _render(_run("destroy", inv, cluster, component, backend_url))
