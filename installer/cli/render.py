"""Rendering: Rich for people on a terminal, one JSON document (or line) for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from installer.cli.state import STATE, OutputFormat
from installer.errors import InstallerError
from installer.inventory.yamlsrc import InputFileError

# Off a terminal (CI logs, pipes) Rich would wrap at 80 columns; tables read better wider.
_WIDTH = None if sys.stdout.isatty() else 160
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def emit_json(payload: dict[str, Any]) -> None:
    """Write one JSON document to stdout, on one line: commands that stream events (bootstrap,
    destroy) end with it, and a CI runbook reads their output line by line."""
    sys.stdout.write(json.dumps(payload, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def is_json() -> bool:
    """True when the user asked for JSON."""
    return STATE.output is OutputFormat.JSON


def render_error(exc: InstallerError) -> None:
    """Show an installer error: one labelled line (or JSON), never a traceback."""
    if is_json():
        error: dict[str, Any] = {
            "type": type(exc).__name__,
            "message": exc.message,
            "exit_code": int(exc.exit_code),
        }
        if exc.remedy:
            error["remedy"] = exc.remedy
        if isinstance(exc, InputFileError):
            error["problems"] = [p.as_dict() for p in exc.problems]
        if STATE.run is not None:
            error["log"] = str(STATE.run.log_file)
        emit_json({"ok": False, "error": error})
        return
    label = {1: "failed", 2: "bad input", 3: "environment"}.get(int(exc.exit_code), "error")
    if isinstance(exc, InputFileError):
        n = len(exc.problems)
        err.print(f"[bold red]{label}:[/] {n} problem{'s' if n != 1 else ''}", markup=True)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False)
    else:
        err.print(f"[bold red]{label}:[/] ", end="", markup=True)
        err.print(exc.message, markup=False)
        if exc.remedy:
            err.print(f"  remedy: {exc.remedy}", markup=False)


def render_unexpected(exc: BaseException) -> None:
    """Point at the log for an error the installer did not anticipate."""
    where = f"; details in {STATE.run.log_file}" if STATE.run is not None else ""
    summary = f"unexpected error: {type(exc).__name__}{where}; re-run with --debug for a traceback"
    if is_json():
        emit_json(
            {"ok": False, "error": {"type": type(exc).__name__, "message": summary, "exit_code": 1}}
        )
    else:
        err.print(f"[bold red]error:[/] {summary}", markup=True)
