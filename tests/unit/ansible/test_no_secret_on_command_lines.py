"""No role puts a secret on a command line: argv shows in the VM's process list, whatever
`no_log` keeps out of Ansible's output. Secrets go in files or request bodies instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROLES = Path(__file__).resolve().parents[3] / "playbooks" / "roles"
COMMAND_MODULES = {
    "ansible.builtin.command",
    "ansible.builtin.shell",
    "ansible.builtin.raw",
    "command",
    "shell",
    "raw",
}
SECRET_MARKS = ("password", "passwd", "secret", "token")


def tasks(items: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


def command_lines() -> Iterator[tuple[Path, str, str]]:
    for path in sorted(ROLES.rglob("tasks/*.yml")):
        for task in tasks(yaml.safe_load(path.read_text())):
            for module in COMMAND_MODULES & task.keys():
                args = task[module]
                # stdin is not a command line: a secret given there stays out of the process list
                if isinstance(args, dict):
                    args = {k: v for k, v in args.items() if k in ("argv", "cmd", "_raw_params")}
                line = args if isinstance(args, str) else yaml.safe_dump(args)
                yield path, str(task.get("name", "?")), line


def test_the_walk_sees_the_roles_commands() -> None:
    names = {name for _, name, _ in command_lines()}
    assert "Run devpi-init" in names


def test_no_secret_reaches_a_command_line() -> None:
    offenders = [
        f"{path.relative_to(ROLES)}: {name}"
        for path, name, line in command_lines()
        if "lookup(" in line and any(mark in line.lower() for mark in SECRET_MARKS)
    ]
    assert offenders == []
