"""The `installer` command: global options, command registration, errors to exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from installer import __version__
from installer.cli import (
    airgap_cmd,
    auxvm_cmd,
    bootstrap_cmd,
    checks_cmd,
    init_cmd,
    inventory_cmd,
    stacks_cmd,
    support_cmd,
    validate_cmd,
)
from installer.cli.render import render_error, render_unexpected
from installer.cli.state import STATE, OutputFormat
from installer.errors import ExitCode, InstallerError

app = typer.Typer(
    name="installer",
    help="Install and bootstrap the on-prem ML platform from one inventory file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"installer {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text for people, json for machines.")
    ] = OutputFormat.TEXT,
    debug: Annotated[
        bool, typer.Option("--debug", help="Log to stderr too and show tracebacks.")
    ] = False,
    log_dir: Annotated[
        Path,
        typer.Option(
            "--log-dir", help="Where run folders (logs, events) go.", envvar="INSTALLER_LOG_DIR"
        ),
    ] = STATE.log_dir,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options; they come before the command."""
    STATE.output, STATE.debug, STATE.log_dir = output, debug, log_dir


# Registration in one place: one module per command or group.
app.command("validate")(validate_cmd.validate)
app.command("init")(init_cmd.init)
app.command("bootstrap")(bootstrap_cmd.bootstrap)
app.command("plan")(bootstrap_cmd.plan)
app.command("status")(bootstrap_cmd.status)
app.command("destroy")(bootstrap_cmd.destroy)
app.add_typer(inventory_cmd.group, name="inventory")
app.command("airgap-bundle")(airgap_cmd.airgap_bundle)
app.command("airgap-verify")(airgap_cmd.airgap_verify)
app.command("airgap-load")(airgap_cmd.airgap_load)
app.add_typer(stacks_cmd.group, name="stacks")
app.add_typer(auxvm_cmd.group, name="auxvm")
app.command("preflight")(checks_cmd.preflight)
app.command("verify")(checks_cmd.verify)
app.command("support-bundle")(support_cmd.support_bundle)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        result = app(args=argv, prog_name="installer", standalone_mode=False)
    except InstallerError as exc:
        logging.getLogger("installer").info("%s: %s", type(exc).__name__, exc.message)
        render_error(exc)
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        typer.echo("aborted", err=True)
        return int(ExitCode.FAILED)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        logging.getLogger("installer").exception("unexpected error")
        if STATE.debug:
            raise
        render_unexpected(exc)
        return int(ExitCode.FAILED)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
