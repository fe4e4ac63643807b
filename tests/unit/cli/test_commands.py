"""The CLI frame: validate, init, JSON output, exit codes, run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "inventories" / "onprem.example.yml"


def installer(
    *args: str, log_dir: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_validate_example_text(tmp_path: Path) -> None:
    proc = installer("validate", "--inventory", str(EXAMPLE), log_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout and "acme-ml" in proc.stdout


def test_validate_json_global_and_per_command(tmp_path: Path) -> None:
    for args in (
        ["--output", "json", "validate", "-i", str(EXAMPLE)],
        ["validate", "-i", str(EXAMPLE), "--output", "json"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["ok"] is True
        assert data["clusters"][0]["name"] == "prod"
        assert [p["name"] for p in data["clusters"][0]["node_pools"]] == [
            "services",
            "cpu",
            "a100",
            "h100-spot",
        ]


def test_json_error_carries_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(EXAMPLE.read_text().replace("pools: [a100]", "pools: [a1000]", 1))
    proc = installer("-o", "json", "validate", "-i", str(bad), log_dir=tmp_path)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["exit_code"] == 2
    (problem,) = error["problems"]
    assert problem["path"] == "clusters[0].presets[2].pools[0]"
    assert problem["line"] == 86
    assert "a1000" in problem["message"]


def test_every_run_writes_a_log(tmp_path: Path) -> None:
    installer("validate", "-i", str(EXAMPLE), log_dir=tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith(f"-validate-{run.name.rsplit('-', 1)[1]}")
    log = run / "installer.log"
    assert "validate" in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = installer("validate", "--no-such-flag", log_dir=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_init_writes_a_valid_inventory(tmp_path: Path) -> None:
    target = tmp_path / "x.yml"
    proc = installer("init", "--output-file", str(target), log_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "# " in target.read_text()  # annotated
    proc = installer("validate", "--inventory", str(target), log_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "x.yml"
    target.write_text("keep me")
    proc = installer("init", "--output-file", str(target), log_dir=tmp_path)
    assert proc.returncode == 2
    assert target.read_text() == "keep me"
    assert "--force" in proc.stderr


def test_init_refuses_options_that_do_not_validate(tmp_path: Path) -> None:
    target = tmp_path / "x.yml"
    proc = installer("init", "-f", str(target), "--domain", "Not A Domain", log_dir=tmp_path)
    assert proc.returncode == 2
    assert not target.exists()


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("installer")
    proc = subprocess.run(
        [str(script), "--log-dir", str(tmp_path), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("installer ")


def test_unexpected_error_points_at_the_log_without_traceback(tmp_path: Path) -> None:
    # A directory where the log file must go makes the run's log unwritable mid-run: an
    # environment problem, reported as such.
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    proc = installer("validate", "-i", str(EXAMPLE), log_dir=blocker)
    assert proc.returncode == 3
    assert "--log-dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_secret_values_never_reach_the_log(tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    env = {**os.environ, "HUB_KEY": secret}
    code = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from installer.runlog import start_run\n"
        "from installer.inventory.types import SecretRef\n"
        f"run = start_run('t', Path({str(tmp_path)!r}))\n"
        "value = SecretRef('env:HUB_KEY').resolve()\n"
        "logging.getLogger('installer.t').info('connecting with %s', value.get_secret_value())\n"
        "print(run.log_file)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    log = Path(proc.stdout.strip()).read_text()
    assert "connecting with ***" in log
    assert secret not in log


def test_run_folder_is_absolute_for_a_relative_log_dir(tmp_path: Path) -> None:
    # Engines give tools (ssh under Ansible) paths inside the run folder; those tools run in
    # other folders, so a relative --log-dir must still yield absolute paths.
    proc = installer("validate", "-i", str(EXAMPLE), log_dir=Path("runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from installer.runlog import start_run

    run = start_run("t", Path("relative-runs"))
    try:
        assert run.folder.is_absolute()
    finally:
        import shutil

        shutil.rmtree(Path("relative-runs"), ignore_errors=True)


def test_json_documents_are_one_line_each(tmp_path: Path) -> None:
    """Streams of events end with a summary or an error: a runbook reads them line by line."""
    bad = tmp_path / "bad.yml"
    bad.write_text(EXAMPLE.read_text().replace("airgapped: true", "airgapped: maybe"))
    for inventory, code in ((EXAMPLE, 0), (bad, 2)):
        proc = installer("-o", "json", "validate", "-i", str(inventory), log_dir=tmp_path)
        assert proc.returncode == code, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout
        assert json.loads(lines[0])["ok"] is (code == 0)
