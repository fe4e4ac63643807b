"""An interrupted update is recovered: pending operations and a dead process's lock cleared."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from installer.engines.pulumi import PulumiEngine
from installer.inventory import load_inventory
from installer.stacks.inputs import stack_input
from installer.state import StateDir
from tests.e2e.stacks.conftest import Site

pytestmark = pytest.mark.e2e


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_pending_create_and_stale_lock_are_cleared(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_PULUMI_BIN_DIR", site.lab.env["LAB_PULUMI_BIN_DIR"])
    inv = load_inventory(site.inventory)
    engine = PulumiEngine(state=StateDir(inv.site.state_dir))
    si = stack_input("nodes", inv, inv.clusters[0], engine.state)
    try:
        engine.up(si)
        # What a killed `pulumi up` leaves: a resource created in the cluster but only pending
        # in the state, and the lock of the process that died.
        # (`pulumi stack import` drops pending operations, so the checkpoint is edited on disk
        # the way the killed process left it.)
        backend = Path(engine.backend.removeprefix("file://"))
        checkpoint = backend / ".pulumi" / "stacks" / si.project / f"{si.stack}.json"
        doc = json.loads(checkpoint.read_text(encoding="utf-8"))
        latest = doc["checkpoint"]["latest"]
        victim = next(r for r in latest["resources"] if r["urn"].endswith("::labels-cpu-1"))
        latest["resources"].remove(victim)
        latest["pending_operations"] = [{"resource": victim, "type": "creating"}]
        checkpoint.write_text(json.dumps(doc), encoding="utf-8")
        locks = backend / ".pulumi" / "locks" / "organization" / si.project / si.stack
        locks.mkdir(parents=True, exist_ok=True)
        lock = locks / f"{uuid.uuid4()}.json"
        lock.write_text(
            json.dumps(
                {
                    "pid": _dead_pid(),
                    "username": "root",
                    "hostname": socket.gethostname(),
                    "timestamp": "2026-01-01T00:00:00Z",
                }
            ),
            encoding="utf-8",
        )

        summary = engine.up(si)
        assert any("stale lock" in r for r in summary.recovered), summary.recovered
        assert any("pending creating" in r and "labels-cpu-1" in r for r in summary.recovered)
        assert not lock.exists()
        assert engine.preview(si).changes == 0
    finally:
        engine.destroy(si)
