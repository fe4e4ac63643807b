"""bench/run in a checkout without the project's venv says what to do instead of failing on an
import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.fixtures.lab import REPO


def test_without_a_venv_it_names_make_setup(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "bench", checkout / "bench")
    done = subprocess.run(
        ["bash", str(checkout / "bench" / "run"), "airgap"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "run `make setup` first" in done.stderr
    assert "Traceback" not in done.stderr


def test_with_the_venv_it_runs_the_benchmark() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "run"), "airgap", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "make setup" not in done.stderr
