"""The offline Pulumi environment: tool checks, state layout, secrets kept private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from installer.engines.pulumi_toolchain import (
    INLINE_TOOLS,
    KUBERNETES_PLUGIN,
    PROJECT_TOOLS,
    PULUMI_CLI,
    PYTHON_LANGUAGE_HOST,
    PulumiToolchain,
    offline_environment,
)
from installer.errors import EnvironmentProblem, ExitCode


def _tool_dir(tmp_path: Path, names: tuple[str, ...]) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        tool = folder / name
        tool.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        tool.chmod(0o755)
    return folder


def test_missing_tools_are_named(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, (PULUMI_CLI,))
    with pytest.raises(EnvironmentProblem) as err:
        offline_environment(tmp_path / "state", bin_dir=bin_dir)
    assert err.value.message.endswith(f"missing {KUBERNETES_PLUGIN}")
    assert err.value.exit_code == ExitCode.ENVIRONMENT
    assert not (tmp_path / "state").exists()  # nothing is made before the check passes


def test_a_file_that_cannot_run_counts_as_missing(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, INLINE_TOOLS)
    (bin_dir / KUBERNETES_PLUGIN).chmod(0o644)
    assert PulumiToolchain(bin_dir).missing() == [KUBERNETES_PLUGIN]


def test_project_runs_need_the_language_host(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, INLINE_TOOLS)
    offline_environment(tmp_path / "state", bin_dir=bin_dir)  # inline programs: enough
    with pytest.raises(EnvironmentProblem, match=PYTHON_LANGUAGE_HOST):
        offline_environment(tmp_path / "state", bin_dir=bin_dir, tools=PROJECT_TOOLS)


def test_environment_is_offline_with_state_in_the_folder(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, INLINE_TOOLS)
    state = tmp_path / "state"
    env = offline_environment(state, bin_dir=bin_dir, base_path="/usr/bin:/bin")
    assert env["PATH"] == f"{bin_dir.resolve()}:/usr/bin:/bin"
    assert env["PULUMI_BACKEND_URL"] == (state / "backend").resolve().as_uri()
    assert env["PULUMI_HOME"] == str(state / "home")
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert "PULUMI_CONFIG_PASSPHRASE" not in env  # the secret travels as a file only
    for folder in (state, state / "backend", state / "home"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_passphrase_is_generated_once_and_private(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, INLINE_TOOLS)
    first = offline_environment(tmp_path / "state", bin_dir=bin_dir)
    passphrase = Path(first["PULUMI_CONFIG_PASSPHRASE_FILE"])
    value = passphrase.read_text(encoding="utf-8")
    assert len(value) >= 32
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    second = offline_environment(tmp_path / "state", bin_dir=bin_dir)
    assert Path(second["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text(encoding="utf-8") == value


def test_cli_version_reports_a_failing_cli(tmp_path: Path) -> None:
    bin_dir = _tool_dir(tmp_path, ())
    cli = bin_dir / PULUMI_CLI
    cli.write_text("#!/bin/sh\necho broken >&2\nexit 3\n", encoding="utf-8")
    cli.chmod(0o755)
    with pytest.raises(EnvironmentProblem, match="broken"):
        PulumiToolchain(bin_dir).cli_version()
