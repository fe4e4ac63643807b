"""The `installer` command: global options, command registration, errors to exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup
from typer.models import CommandInfo

from installer import __version__
from installer.cli.render import emit_json, is_json, render_error, render_unexpected
from installer.cli.state import STATE, OutputFormat
from installer.errors import ExitCode, InstallerError
from installer.redact import redacted_traceback

# Registration in one place: command name -> `module:attribute` (a function for a command, a
# Typer for a group). A command's module, and the engines it pulls in (Pulumi, Ansible, the
# bundle code), load only when that command runs, so `installer validate` starts quickly.
COMMANDS: Mapping[str, str] = {
    "validate": "validate_cmd:validate",
    "init": "init_cmd:init",
    "inventory": "inventory_cmd:group",
    "preflight": "checks_cmd:preflight",
    "plan": "bootstrap_cmd:plan",
    "bootstrap": "bootstrap_cmd:bootstrap",
    "status": "bootstrap_cmd:status",
    "verify": "checks_cmd:verify",
    "destroy": "bootstrap_cmd:destroy",
    "airgap-bundle": "airgap_cmd:airgap_bundle",
    "airgap-verify": "airgap_cmd:airgap_verify",
    "airgap-load": "airgap_cmd:airgap_load",
    "stacks": "stacks_cmd:group",
    "auxvm": "auxvm_cmd:group",
    "support-bundle": "support_cmd:support_bundle",
}


class LazyGroup(TyperGroup):
    """The top-level group: commands are built from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self.commands:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            target = getattr(import_module(f"installer.cli.{module}"), attr)
            command: click.Command
            if isinstance(target, typer.Typer):
                command = typer.main.get_group(target)
            else:
                command = typer.main.get_command_from_info(
                    CommandInfo(name=cmd_name, callback=target),
                    pretty_exceptions_short=False,
                    rich_markup_mode=typer.core.DEFAULT_MARKUP_MODE,
                )
            command.name = cmd_name
            self.add_command(command, cmd_name)
        return self.commands[cmd_name]


app = typer.Typer(
    name="installer",
    cls=LazyGroup,
    help="Install and bootstrap the on-prem ML platform from one inventory file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _output(value: OutputFormat) -> OutputFormat:
    # Set while parsing, not in the callback: a usage error in the command's own arguments (or
    # an unknown command) is raised before the callback runs and must still honour --output.
    STATE.output = value
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"installer {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output", "-o", callback=_output, help="text for people, json for machines."
        ),
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


def _asks_json(args: list[str]) -> bool:
    """The command line asks for JSON output somewhere: a usage error stops the parsing before
    a command's own `--output` (or one after the error) is read."""
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output"):
            value = args[index + 1] if index + 1 < len(args) else ""
        elif arg.startswith("--output="):
            value = arg.partition("=")[2]
        elif arg.startswith("-o") and not arg.startswith("--"):
            value = arg[2:]
        else:
            continue
        if value == OutputFormat.JSON.value:
            return True
    return False


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
        # Arguments the command cannot take are bad input, whatever click's own code says.
        if is_json() or _asks_json(sys.argv[1:] if argv is None else argv):
            error = {"type": type(exc).__name__, "message": exc.format_message(), "exit_code": 2}
            emit_json({"ok": False, "error": error})
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        logging.getLogger("installer").exception("unexpected error")
        if STATE.debug:
            # Python's own print of an uncaught exception would show secrets in its frames'
            # messages; this one is masked like the log.
            sys.stderr.write(redacted_traceback(exc))
            return int(ExitCode.FAILED)
        render_unexpected(exc)
        return int(ExitCode.FAILED)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
