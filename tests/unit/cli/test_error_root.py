"""One error root, four exit codes: what the frame does with each kind of failure.

Commands added to the real app for this test raise each error; the process runs the real entry
point (`main`), so the exit code, stderr, stdout and the run folder are what an operator sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from installer.errors import BadInputError, EnvironmentProblem, FailedError, InstallerError

PROBE = """
import sys
from installer.cli.app import app, main
from installer.cli.state import begin
from installer.errors import BadInputError, EnvironmentProblem, FailedError
from installer.redact import REDACTOR

KINDS = {"failed": FailedError, "bad-input": BadInputError, "environment": EnvironmentProblem}

@app.command("raise")
def _raise(kind: str) -> None:
    begin("raise", None)
    if kind == "unexpected":
        raise ZeroDivisionError("the code did not anticipate this")
    if kind == "secret":
        # A secret the installer registered, then met again in a library's exception.
        REDACTOR.register("hunter2-the-hub-password")
        try:
            raise ConnectionError("login refused for hunter2-the-hub-password")
        except ConnectionError as inner:
            raise RuntimeError("push failed: hunter2-the-hub-password") from inner
    raise KINDS[kind](f"{kind} happened", remedy=f"fix the {kind}")

sys.exit(main(sys.argv[1:]))
"""

CASES = [
    ("failed", 1, "failed:"),
    ("bad-input", 2, "bad input:"),
    ("environment", 3, "environment:"),
]


def probe(
    *args: str, log_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, "--log-dir", str(log_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def _log(log_dir: Path) -> str:
    (run,) = log_dir.iterdir()
    return (run / "installer.log").read_text(encoding="utf-8")


def test_every_deliberate_error_is_one_root() -> None:
    for cls in (FailedError, BadInputError, EnvironmentProblem):
        assert issubclass(cls, InstallerError)
    assert [int(c.exit_code) for c in (FailedError, BadInputError, EnvironmentProblem)] == [1, 2, 3]


@pytest.mark.parametrize(("kind", "code", "label"), CASES)
def test_error_kind_sets_the_exit_code_text(
    tmp_path: Path, kind: str, code: int, label: str
) -> None:
    proc = probe("raise", kind, log_dir=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert f"{label} {kind} happened" in proc.stderr
    assert f"remedy: fix the {kind}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{kind} happened" in _log(tmp_path)


@pytest.mark.parametrize(("kind", "code", "label"), CASES)
def test_error_kind_sets_the_exit_code_json(
    tmp_path: Path, kind: str, code: int, label: str
) -> None:
    proc = probe("-o", "json", "raise", kind, log_dir=tmp_path)
    assert proc.returncode == code, proc.stderr
    (line,) = proc.stdout.splitlines()
    doc = json.loads(line)
    assert doc["ok"] is False
    assert doc["error"]["exit_code"] == code
    assert doc["error"]["remedy"] == f"fix the {kind}"
    (run,) = tmp_path.iterdir()
    assert doc["error"]["log"] == str(run / "installer.log")


def test_unexpected_error_exits_1_points_at_the_log_and_keeps_the_traceback_there(
    tmp_path: Path,
) -> None:
    proc = probe("raise", "unexpected", log_dir=tmp_path)
    assert proc.returncode == 1
    assert "unexpected error: ZeroDivisionError" in proc.stderr
    assert "--debug" in proc.stderr
    (run,) = tmp_path.iterdir()
    assert str(run / "installer.log") in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    log = _log(tmp_path)
    assert "Traceback" in log and "the code did not anticipate this" in log


def test_debug_shows_the_traceback_and_logs_to_stderr(tmp_path: Path) -> None:
    proc = probe("--debug", "raise", "unexpected", log_dir=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "ZeroDivisionError: the code did not anticipate this" in proc.stderr
    assert "INFO    installer: installer " in proc.stderr  # the log, mirrored to stderr


@pytest.mark.parametrize("debug", [False, True], ids=["log", "debug"])
def test_secrets_never_reach_a_traceback(tmp_path: Path, debug: bool) -> None:
    """The log's traceback and --debug's printed one both have registered secrets masked (the
    chained cause included)."""
    proc = probe(*(["--debug"] if debug else []), "raise", "secret", log_dir=tmp_path)
    assert proc.returncode == 1
    log = _log(tmp_path)
    for text in (log, proc.stderr, proc.stdout):
        assert "hunter2" not in text
    assert "RuntimeError: push failed: ***" in log
    assert "ConnectionError: login refused for ***" in log
    if debug:
        assert "Traceback" in proc.stderr and "RuntimeError: push failed: ***" in proc.stderr


def test_debug_does_not_turn_user_errors_into_tracebacks(tmp_path: Path) -> None:
    proc = probe("--debug", "raise", "bad-input", log_dir=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "INFO" in proc.stderr  # log lines mirrored to stderr under --debug


def test_without_debug_nothing_is_logged_to_stderr(tmp_path: Path) -> None:
    proc = probe("raise", "bad-input", log_dir=tmp_path)
    assert "INFO" not in proc.stderr
    assert "INFO" in _log(tmp_path)


def test_log_dir_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "INSTALLER_LOG_DIR": str(tmp_path / "from-env")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "raise", "failed"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 1
    (run,) = (tmp_path / "from-env").iterdir()
    assert run.name.endswith(f"-raise-{run.name.rsplit('-', 1)[1]}")


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "json", "validate", "--no-such-flag"],
        ["-o", "json", "no-such-command"],
        ["-o", "json", "validate"],  # --inventory missing
        ["validate", "-o", "json", "--no-such-flag"],  # the command's own --output
        ["validate", "--no-such-flag", "--output=json"],  # after the error
        ["validate", "-ojson", "--no-such-flag"],
    ],
    ids=[
        "unknown-option",
        "unknown-command",
        "missing-option",
        "command-output",
        "output-after-error",
        "short-joined",
    ],
)
def test_usage_errors_are_bad_input_and_json_when_asked(tmp_path: Path, args: list[str]) -> None:
    proc = probe(*args, log_dir=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stdout.splitlines()
    doc = json.loads(line)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2
    assert "Traceback" not in proc.stderr


def test_bad_output_value_is_bad_input(tmp_path: Path) -> None:
    proc = probe("-o", "yaml", "validate", log_dir=tmp_path)
    assert proc.returncode == 2
    assert "'yaml' is not one of" in proc.stderr
    assert "Traceback" not in proc.stderr
