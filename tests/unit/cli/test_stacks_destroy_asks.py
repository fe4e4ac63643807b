"""`stacks destroy` reads the inventory before it asks, and never waits on a missing terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "inventories" / "onprem.example.yml"


def destroy(*args: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "installer.cli",
            "--log-dir",
            str(log_dir),
            "stacks",
            "destroy",
            *args,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_a_broken_inventory_is_bad_input_before_any_question(tmp_path: Path) -> None:
    broken = tmp_path / "onprem.yml"
    broken.write_text("site: [\n")
    run = destroy("-i", str(broken), log_dir=tmp_path / "logs")
    assert run.returncode == 2, run.stderr
    assert f"{broken}:" in run.stderr and "aborted" not in run.stderr.lower()
    assert "Traceback" not in run.stderr


def test_no_terminal_and_no_yes_is_refused_with_the_remedy(tmp_path: Path) -> None:
    run = destroy("-i", str(EXAMPLE), log_dir=tmp_path / "logs")
    assert run.returncode == 2, run.stderr
    assert "no terminal to ask on" in run.stderr and "pass --yes" in run.stderr


def test_json_output_never_asks(tmp_path: Path) -> None:
    run = destroy("-i", str(EXAMPLE), "-o", "json", log_dir=tmp_path / "logs")
    assert run.returncode == 2
    error = json.loads(run.stdout.strip().splitlines()[-1])
    assert "pass --yes" in json.dumps(error)


def test_an_unknown_cluster_is_named_before_any_question(tmp_path: Path) -> None:
    run = destroy("-i", str(EXAMPLE), "--cluster", "nope", log_dir=tmp_path / "logs")
    assert run.returncode == 2
    assert "cluster nope is not in the inventory" in run.stderr
