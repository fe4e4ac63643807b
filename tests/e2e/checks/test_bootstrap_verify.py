"""Verify after a whole lab bootstrap: green; then red when a pool's taint is removed by hand.

This runs the real `installer bootstrap` on the shared lab (its standard nodes get their pool
labels and taints, the hub its content) and restores the one taint it removes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from installer.site import JOB_TAINT
from tests.e2e.bootstrap.cli import LAB_INVENTORY, installer, tool_env
from tests.e2e.checks.kwok import core
from tests.fixtures.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def bootstrapped(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    logs = tmp_path_factory.mktemp("bootstrap-logs")
    try:
        rc, _, tail = installer(
            "bootstrap", "-i", str(LAB_INVENTORY), "--yes", "--skip", "verify",
            log_dir=logs, timeout=1800, env=tool_env(lab),
        )  # fmt: skip
        assert rc == 0, f"bootstrap of the lab failed (exit {rc}):\n{tail}"
        yield logs
    finally:
        # The lab's nodes are shared with the stacks' own tests: take the cluster side back.
        rc, _, tail = installer(
            "destroy", "-i", str(LAB_INVENTORY), "--yes", "--skip", "auxvm",
            log_dir=logs, timeout=900, env=tool_env(lab),
        )  # fmt: skip
        assert rc == 0, f"destroy of the lab failed (exit {rc}):\n{tail}"


def failing(report: dict[str, Any]) -> list[str]:
    return [
        f"{r['id']} [{r['target']}]: {r['message']}"
        for r in report.get("results", [])
        if r["status"] == "fail"
    ]


def test_verify_is_green_after_bootstrap(bootstrapped: Path) -> None:
    rc, report, tail = installer(
        "verify", "-i", str(LAB_INVENTORY), log_dir=bootstrapped, timeout=600
    )
    assert rc == 0 and report.get("ok") is True, failing(report) or tail
    statuses = {(r["id"], r["target"]): r["status"] for r in report["results"]}
    assert statuses[("sched.preset", "cluster/lab/preset/a100x8")] == "pass"
    assert statuses[("storage.provisioning", "cluster/lab")] == "info"  # kwok: not checkable


def test_verify_fails_when_a_pool_taint_is_removed_by_hand(lab: Lab, bootstrapped: Path) -> None:
    api = core(lab)
    node = api.read_node("h100-1")
    saved = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints or []]
    assert any(t["key"] == JOB_TAINT for t in saved), "the nodes phase did not taint h100-1"
    try:
        api.patch_node("h100-1", {"spec": {"taints": [t for t in saved if t["key"] != JOB_TAINT]}})
        rc, report, tail = installer(
            "verify", "-i", str(LAB_INVENTORY), log_dir=bootstrapped, timeout=600
        )
    finally:
        api.patch_node("h100-1", {"spec": {"taints": saved}})
    assert rc == 1, tail
    (result,) = [
        r for r in report["results"]
        if r["id"] == "sched.job_taint" and r["target"] == "cluster/lab/pool/h100"
    ]  # fmt: skip
    assert result["status"] == "fail"
    assert "scheduled on h100-1" in result["message"]
