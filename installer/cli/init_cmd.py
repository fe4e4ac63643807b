"""`installer init`: write an annotated starter inventory that validates."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import jinja2
import typer

from installer.cli.render import emit_json, is_json, out
from installer.cli.state import OutputOption, begin
from installer.errors import BadInputError
from installer.inventory import load_inventory


def render_starter(
    file_name: str, site_name: str, domain: str, vm_address: str, ssh_user: str
) -> str:
    """The starter inventory's text."""
    template = resources.files("installer").joinpath("data/starter.yml.j2").read_text("utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701 - YAML, not HTML
    return env.from_string(template).render(
        file_name=file_name,
        site_name=site_name,
        domain=domain,
        vm_address=vm_address,
        ssh_user=ssh_user,
    )


def init(
    output_file: Annotated[
        Path, typer.Option("--output-file", "-f", help="Where to write the inventory.")
    ] = Path("onprem.yml"),
    site_name: Annotated[str, typer.Option(help="Short site name.")] = "mysite",
    domain: Annotated[str, typer.Option(help="Base DNS domain.")] = "ml.example.com",
    vm_address: Annotated[str, typer.Option(help="The auxiliary VM's address.")] = "192.0.2.10",
    ssh_user: Annotated[str, typer.Option(help="SSH user on the VM.")] = "ops",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    output: OutputOption = None,
) -> None:
    """Write an annotated starter inventory; it validates as written."""
    begin("init", output)
    if output_file.exists() and not force:
        raise BadInputError(
            f"{output_file} already exists", remedy="pass --force to overwrite it, or another path"
        )
    text = render_starter(output_file.name, site_name, domain, vm_address, ssh_user)
    tmp = output_file.with_name(f".{output_file.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        load_inventory(tmp)  # the options feed the file: refuse to write one that does not validate
        tmp.replace(output_file)
    finally:
        tmp.unlink(missing_ok=True)
    if is_json():
        emit_json({"ok": True, "written": str(output_file)})
    else:
        out.print(f"wrote {output_file}; next: installer validate --inventory {output_file}")
