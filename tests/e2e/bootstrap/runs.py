"""Whole-site runs on the lab, shared by the end-to-end bootstrap tests (connected, air-gapped).

`run_bootstrap()` runs the real `installer bootstrap -o json` and keeps its event stream;
`hub_data_left()` lists what of the hub is on the VM (nothing after `destroy --purge`);
`host_canaries()` puts a file of this machine's own where the hub's play writes on the VM;
`upstream()` switches the lab's stand-in internet on or off. Callers hold `site_lock()`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.inventory import load_inventory
from tests.fixtures.lab import REPO, Lab

UPSTREAM = REPO / "lab" / "components" / "60-upstream.sh"
BOOTSTRAP_TIMEOUT_S = 2400


@dataclass(frozen=True)
class Bootstrap:
    """One `installer bootstrap -o json` run: exit code, events, output tail, run folder."""

    rc: int
    events: list[dict[str, Any]]
    tail: str
    run_dir: Path

    @property
    def summary(self) -> dict[str, Any]:
        """The last line, `{"event": "summary", ...}` (empty when the run did not get there)."""
        found = [e for e in self.events if e.get("event") == "summary"]
        return found[-1] if found else {}

    def phase(self, name: str) -> dict[str, Any]:
        """The summary's outcome of phase `name`."""
        found: list[dict[str, Any]] = [
            p for p in self.summary.get("phases", []) if p["phase"] == name
        ]
        (outcome,) = found
        return outcome

    def seconds(self) -> dict[str, float]:
        """Seconds per phase, from the `phase_started` / `phase_finished` events."""
        started: dict[str, float] = {}
        took: dict[str, float] = {}
        for event in self.events:
            if event.get("event") == "phase_started":
                started[event["phase"]] = event["time"]
            elif event.get("event") == "phase_finished" and event["phase"] in started:
                took[event["phase"]] = round(event["time"] - started[event["phase"]], 2)
        return took


def run_bootstrap(inventory: Path, log_dir: Path, env: dict[str, str], *args: str) -> Bootstrap:
    """`installer bootstrap -i INVENTORY --yes ARGS -o json`; its stdout is the event stream."""
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), "-o", "json",
         "bootstrap", "-i", str(inventory), "--yes", *args],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=BOOTSTRAP_TIMEOUT_S,
        env=env,
    )  # fmt: skip
    (run_dir,) = log_dir.glob("*-bootstrap-*")
    return Bootstrap(
        proc.returncode, parse_stream(proc.stdout), (proc.stdout + proc.stderr)[-6000:], run_dir
    )


def parse_stream(stdout: str) -> list[dict[str, Any]]:
    """The documents of a `-o json` run, one per line: its events, then the closing summary (or
    the error)."""
    events: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                events.append(doc)
    return events


def hub_data_left(lab: Lab, inventory: Path) -> list[str]:
    """The hub's data paths and folders that exist on the VM (asked over SSH as its admin)."""
    svc = load_inventory(inventory).aux_vm.services
    paths = [svc.registry.data_path, svc.chartmuseum.data_path, svc.devpi.data_path,
             "/etc/onprem-hub", "/opt/onprem-hub"]  # fmt: skip
    proc = subprocess.run(
        ["ssh", "-i", str(lab.vm_key), "-p", str(lab.vm_ssh_port),
         "-o", f"UserKnownHostsFile={lab.vm_known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{lab.vm_user}@{lab.vm_addr}",
         "sudo", "-n", "ls", "-d", "--", *paths],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return proc.stdout.split()


# Where the hub's play writes on the VM (the hub/common role's folders, its data, its units), as
# paths on this machine: the lab VM has a root file system of its own, so none of them is this
# machine's to change (lab/components/20-vm.sh).
HUB_PLACES = ("/etc/onprem-hub", "/opt/onprem-hub", "/var/lib/onprem-hub", "/var/log/onprem-hub",
              "/run/onprem-hub")  # fmt: skip
CANARY = "onprem-installer-e2e-canary"


@contextmanager
def host_canaries() -> Iterator[list[Path]]:
    """A canary file on this machine in each of the hub's folders (the folders made for it where
    they are missing); yields the canaries; removes them, and the folders it made, at the end."""
    made: list[Path] = []
    canaries: list[Path] = []
    try:
        for place in map(Path, HUB_PLACES):
            if not place.exists():
                place.mkdir(parents=True)
                made.append(place)
            canary = place / CANARY
            canary.write_text("this machine's own file; the lab VM's hub must never touch it\n")
            canaries.append(canary)
        yield canaries
    finally:
        for canary in canaries:
            canary.unlink(missing_ok=True)
        for place in reversed(made):
            shutil.rmtree(place, ignore_errors=True)


def upstream(verb: str) -> None:
    """`lab/components/60-upstream.sh up|down`: the lab's stand-in internet on or off."""
    proc = subprocess.run(
        ["bash", str(UPSTREAM), verb], capture_output=True, text=True, check=False, timeout=1800
    )
    assert proc.returncode == 0, f"{UPSTREAM.name} {verb}: {(proc.stdout + proc.stderr)[-3000:]}"
