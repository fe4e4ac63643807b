"""Command registration: every command resolves, and one command loads only its own engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from installer.cli.app import COMMANDS
from tests.unit.cli.test_commands import EXAMPLE, installer

# Heavy engines no inventory-only command needs.
ENGINES = ("pulumi", "ansible_runner", "paramiko", "kubernetes")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_registered_command_has_help(name: str, tmp_path: Path) -> None:
    proc = installer(name, "--help", log_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"installer {name}" in proc.stdout


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    proc = installer("--help", log_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout


def test_validate_loads_no_engine(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from installer.cli.app import main\n"
        f"code = main(['--log-dir', {str(tmp_path)!r}, 'validate', '-i', {str(EXAMPLE)!r}])\n"
        f"loaded = sorted(m for m in {ENGINES!r} if m in sys.modules)\n"
        "print(code, loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 []"


def test_unknown_command_is_bad_input(tmp_path: Path) -> None:
    proc = installer("bootstrapp", log_dir=tmp_path)
    assert proc.returncode == 2
    assert "No such command" in proc.stderr
