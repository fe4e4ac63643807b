"""An interrupted update is recovered: pending operations and a dead process's lock cleared; an
older installer's nodes stack is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from installer.engines.pulumi import PulumiEngine
from installer.inventory import load_inventory
from installer.stacks import StackInput
from installer.stacks.inputs import stack_input
from installer.stacks.taints import OWNERSHIP_ANNOTATION
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
        with _checkpoint(engine, si) as latest:
            victim = _take_marks(latest)
            latest["pending_operations"] = [{"resource": victim, "type": "creating"}]
        backend = Path(engine.backend.removeprefix("file://"))
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
        assert any("pending creating" in r and "node-marks" in r for r in summary.recovered)
        assert not lock.exists()
        assert engine.preview(si).changes == 0
    finally:
        engine.destroy(si)


@contextmanager
def _checkpoint(engine: PulumiEngine, si: StackInput) -> Iterator[dict[str, Any]]:
    """The stack's latest deployment in its checkpoint file, written back as edited: what a
    killed process or an older installer left (`pulumi stack import` would drop pending
    operations, so the file is edited the way they left it)."""
    backend = Path(engine.backend.removeprefix("file://"))
    checkpoint = backend / ".pulumi" / "stacks" / si.project / f"{si.stack}.json"
    doc = json.loads(checkpoint.read_text(encoding="utf-8"))
    yield doc["checkpoint"]["latest"]
    checkpoint.write_text(json.dumps(doc), encoding="utf-8")


def _take_marks(latest: dict[str, Any]) -> dict[str, Any]:
    """Remove the `node-marks` resource from the deployment; return it."""
    marks = next(r for r in latest["resources"] if r["urn"].endswith("::node-marks"))
    latest["resources"].remove(marks)
    return marks  # type: ignore[no-any-return]


def _marks(core: client.CoreV1Api) -> dict[str, tuple[dict[str, str], list[Any], str | None]]:
    return {
        n.metadata.name: (
            dict(n.metadata.labels or {}),
            [(t.key, t.value, t.effect) for t in n.spec.taints or []],
            (n.metadata.annotations or {}).get(OWNERSHIP_ANNOTATION),
        )
        for n in core.list_node().items
    }


def test_an_older_installers_per_node_resources_are_taken_over(
    site: Site, core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An older installer held two resources per node (`labels-<node>`, a NodePatch by the same
    # field manager, and `taints-<node>`, whose ownership record is on the node). Its state is
    # made here from today's: the same marks on the nodes, the per-node resources in the state.
    monkeypatch.setenv("LAB_PULUMI_BIN_DIR", site.lab.env["LAB_PULUMI_BIN_DIR"])
    inv = load_inventory(site.inventory)
    engine = PulumiEngine(state=StateDir(inv.site.state_dir))
    si = stack_input("nodes", inv, inv.clusters[0], engine.state)
    before = _marks(core)
    try:
        engine.up(si)
        marked = _marks(core)
        with _checkpoint(engine, si) as latest:
            marks = _take_marks(latest)
            prefix = marks["urn"].rsplit("$", 1)[0]
            nodes = sorted(
                k.removeprefix("node:") for k in marks["inputs"] if k.startswith("node:")
            )
            for node in nodes:
                for kind, name in (
                    ("kubernetes:core/v1:NodePatch", f"labels-{node}"),
                    ("pulumi-python:dynamic:Resource", f"taints-{node}"),
                ):
                    latest["resources"].append(
                        {
                            "urn": f"{prefix}${kind}::{name}",
                            "custom": True,
                            "id": node,
                            "type": kind,
                            "parent": marks["parent"],
                            "inputs": {},
                            "outputs": {},
                        }
                    )

        summary = engine.up(si)
        assert any(f"forgot {2 * len(nodes)} per-node resources" in r for r in summary.recovered), (
            summary.recovered
        )
        assert [(s.op, s.name) for s in summary.changed] == [("create", "node-marks")]
        assert _marks(core) == marked
        assert engine.preview(si).changes == 0
        # The take-over is whole: destroy gives every node back as it was before any installer.
        engine.destroy(si)
        assert _marks(core) == before
    finally:
        engine.destroy(si)
