"""Every run writes a log file in its own run folder: each registered command, ok or refused.

The commands run with input that needs no site (a missing inventory, bundle or key), so each
either finishes (init, schema, support-bundle) or is refused as bad input, and in both cases
leaves `<log dir>/<UTC time>-<command>-<pid>/installer.log` behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from installer import __version__

MISSING = "missing.yml"

# command -> (arguments after the command, expected exit code). A new command needs a row here.
RUNS: dict[str, tuple[list[str], int]] = {
    "validate": (["-i", MISSING], 2),
    "init": (["--output-file", "starter.yml"], 0),
    "inventory schema": ([], 0),
    "inventory show": (["-i", MISSING], 2),
    "preflight": (["-i", MISSING], 2),
    "plan": (["-i", MISSING], 2),
    "bootstrap": (["-i", MISSING], 2),
    "status": (["-i", MISSING], 2),
    "verify": (["-i", MISSING], 2),
    "destroy": (["-i", MISSING], 2),
    "airgap-bundle": (["--output-file", "b.tar.zst", "--sign-key", "no-key.pem"], 2),
    "airgap-verify": (["b.tar.zst", "--verify-key", "no-key.pem"], 2),
    "airgap-load": (["b.tar.zst", "--verify-key", "no-key.pem"], 2),
    "stacks config": (["-i", MISSING], 2),
    "stacks preview": (["-i", MISSING], 2),
    "stacks up": (["-i", MISSING], 2),
    "stacks refresh": (["-i", MISSING], 2),
    "stacks destroy": (["-i", MISSING], 2),
    "auxvm inventory": (["-i", MISSING], 2),
    "support-bundle": (["--output-file", "support.tar.gz"], 0),
}

# One process runs every command through the real entry point (the engines load once); each
# command gets its own log dir so its run folder is found unambiguously.
DRIVER = """
import contextlib, io, json, sys
from installer.cli.app import main

results = {}
for slug, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results[slug] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


def _leaf_commands() -> list[str]:
    import click
    import typer

    from installer.cli.app import app

    group = typer.main.get_group(app)
    ctx = click.Context(group)
    names: list[str] = []

    def walk(cmd: click.Command, prefix: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*prefix, name])
        else:
            names.append(" ".join(prefix))

    walk(group, [])
    return names


def test_the_table_covers_every_registered_command() -> None:
    assert sorted(_leaf_commands()) == sorted(RUNS)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("runs")
    argvs: dict[str, list[str]] = {}
    for cmd, (args, _) in RUNS.items():
        slug = cmd.replace(" ", "-")
        argvs[slug] = ["--log-dir", str(work / "logs" / slug), *cmd.split(), *args]
        # The same run for a machine: own log dir, and outputs of its own (init's file).
        json_args = [a.replace("starter", "starter-json") for a in args]
        json_args = [a.replace("support.", "support-json.") for a in json_args]
        json_log = str(work / "json-logs" / slug)
        argvs[f"{slug}/json"] = ["--log-dir", json_log, "-o", "json", *cmd.split(), *json_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTALLER_")}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, dict[str, str]] = json.loads(proc.stdout.splitlines()[-1])
    return work, data


@pytest.mark.parametrize("command", list(RUNS))
def test_command_writes_its_run_folder(
    results: tuple[Path, dict[str, dict[str, str]]], command: str
) -> None:
    work, data = results
    slug = command.replace(" ", "-")
    got = data[slug]
    assert got["code"] == RUNS[command][1], got["stderr"]
    assert "Traceback" not in got["stderr"] + got["stdout"]
    (run,) = (work / "logs" / slug).iterdir()
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{re.escape(slug)}-\d+", run.name), run.name
    assert oct(run.stat().st_mode & 0o777) == "0o700"
    log = run / "installer.log"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    text = log.read_text(encoding="utf-8")
    assert f"installer {__version__}: {command}" in text
    if RUNS[command][1] == 2:
        # The refusal itself is in the log, not only on the terminal.
        assert re.search(r"installer: \w+Error: ", text), text


@pytest.mark.parametrize("command", list(RUNS))
def test_command_speaks_json_when_asked(
    results: tuple[Path, dict[str, dict[str, str]]], command: str
) -> None:
    work, data = results
    slug = command.replace(" ", "-")
    got = data[f"{slug}/json"]
    assert got["code"] == RUNS[command][1], got["stderr"]
    if command == "inventory schema":  # its output is the schema itself
        assert json.loads(got["stdout"])["$schema"].startswith("https://json-schema.org/")
    else:
        (line,) = got["stdout"].splitlines()  # one document on one line
        doc = json.loads(line)
        assert doc["ok"] is (RUNS[command][1] == 0), doc
    (run,) = (work / "json-logs" / slug).iterdir()
    assert (run / "installer.log").is_file()
