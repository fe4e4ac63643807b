"""Showing a run as it happens: readable lines for people, one JSON event per line for CI."""

from __future__ import annotations

import json
import sys
from typing import Any

from installer.cli.render import is_json, out
from installer.phases.base import Event, PhasePlan
from installer.redact import REDACTOR


def event_printer(event: Event) -> None:
    """Render one event (the CLI's event sink)."""
    if is_json():
        sys.stdout.write(REDACTOR.redact(json.dumps(event.as_dict(), default=str)) + "\n")
        sys.stdout.flush()
        return
    message = REDACTOR.redact(event.message)
    if event.kind == "phase_started":
        out.print(f"[bold]▶ {event.phase}[/] {message}".rstrip())
    elif event.kind == "phase_finished":
        status = event.data.get("status", "ok")
        mark = {"ok": "[green]✔", "failed": "[red]✘", "done": "[cyan]↷", "skipped": "[dim]-"}.get(
            status, "[green]✔"
        )
        extra = []
        if "changes" in event.data:
            extra.append(f"{event.data['changes']} change(s)")
        if "seconds" in event.data:
            extra.append(f"{event.data['seconds']}s")
        tail = f" ({', '.join(extra)})" if extra else ""
        out.print(f"{mark} {event.phase}[/] {message}{tail}".rstrip())
    elif event.kind == "change":
        out.print(f"    [yellow]~[/] {message}")
    elif event.kind in ("warning", "error"):
        color = "yellow" if event.kind == "warning" else "red"
        out.print(f"    [{color}]{event.kind}:[/] {message}")
    elif event.kind == "progress":
        done, total = event.data.get("done"), event.data.get("total")
        out.print(f"    {message} {done}/{total}" if total else f"    {message}")
    else:
        out.print(f"    [dim]{message}[/]")


def plan_payload(plans: list[PhasePlan]) -> dict[str, Any]:
    """JSON-ready merged plan."""
    return {
        "changes": sum(len(p.changes) for p in plans),
        "phases": [
            {
                "phase": p.phase,
                "changes": [c.as_dict() for c in p.changes],
                "notes": p.notes,
            }
            for p in plans
        ],
    }


def print_plan(plans: list[PhasePlan]) -> None:
    """The merged plan for people."""
    total = sum(len(p.changes) for p in plans)
    for p in plans:
        state = f"{len(p.changes)} change(s)" if p.changes else "no changes"
        out.print(f"[bold]{p.phase}[/]: {state}")
        for c in p.changes:
            detail = f" ({c.detail})" if c.detail else ""
            out.print(f"  {c.action:<7} {c.kind} {c.name} [dim]on {c.target}{detail}[/]")
        for note in p.notes:
            out.print(f"  [dim]note: {note}[/]")
    out.print(f"[bold]plan:[/] {total} change(s) in {len(plans)} phase(s)")
