"""Running the real `installer` against the lab site, shared by the bootstrap e2e tests.

Tests that change the lab site (bootstrap, destroy, stacks) run one at a time across the
project's engineers and test runs: `site_lock()` serialises them on one machine-wide flock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.auxvm import chartmuseum_binary, devpi_wheelhouse
from tests.fixtures.lab import REPO, Lab, site_inventory, site_lock  # noqa: F401  (re-exported)

# inventories/lab.yml, or its translation for the lab site this session works on (LAB_SITE).
LAB_INVENTORY = site_inventory("lab")


def tool_env(lab: Lab) -> dict[str, str]:
    """Where the lab keeps what bootstrap installs: the Pulumi CLI, ChartMuseum, DevPI wheels."""
    return {
        **os.environ,
        "LAB_PULUMI_BIN_DIR": lab.env["LAB_PULUMI_BIN_DIR"],
        "INSTALLER_HUB_CHARTMUSEUM_BINARY": str(chartmuseum_binary()),
        "INSTALLER_HUB_DEVPI_WHEELHOUSE": str(devpi_wheelhouse()),
    }


# A login shell's PATH: what a new user has after `make demo`, before anything is exported.
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def plain_env() -> dict[str, str]:
    """A plain shell's environment: PATH and HOME only. The lab's site must be fully described by
    its inventory and state folder (kubeconfig, the hub's programs, the Pulumi CLI, the CAs)."""
    return {"PATH": PLAIN_PATH, "HOME": os.environ.get("HOME", "/root")}


def installer(
    *args: str, log_dir: Path, timeout: int, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run `installer -o json ARGS`: exit code, the JSON document (if one), the output's tail."""
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), "-o", "json", *args],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=timeout, env=env,
    )  # fmt: skip
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    except ValueError:
        data = {}
    return proc.returncode, data, (proc.stdout + proc.stderr)[-4000:]
