"""The nodes stack on the lab: labels and taints by pool, zero-change re-run, exact removal."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from installer.site import (
    ACCELERATOR_LABEL,
    JOB_LABEL,
    JOB_TAINT,
    POOL_LABEL,
    POOL_LABEL_LEGACY,
    PREEMPTIBLE_LABEL,
    PREEMPTIBLE_TAINT,
    ROLE_LABEL,
)
from tests.e2e.stacks.conftest import Site

pytestmark = pytest.mark.e2e

OURS = {POOL_LABEL, POOL_LABEL_LEGACY, JOB_LABEL, ACCELERATOR_LABEL, PREEMPTIBLE_LABEL, ROLE_LABEL}
GPU_TAINT = "nvidia.com/gpu"
EXPECTED_POOLS = {
    "cpu-1": "cpu",
    "cpu-2": "cpu",
    "cpu-3": "services",
    "a100-1": "a100",
    "a100-2": "a100",
    "h100-1": "h100-spot",
}


def _facts(core: client.CoreV1Api) -> dict[str, tuple[dict[str, str], set[tuple[str, str]]]]:
    out = {}
    for node in core.list_node().items:
        taints = {(t.key, t.effect) for t in node.spec.taints or []}
        out[node.metadata.name] = (dict(node.metadata.labels or {}), taints)
    return out


def _stack(result: dict[str, Any]) -> dict[str, Any]:
    (summary,) = result["stacks"]
    return summary  # type: ignore[no-any-return]


def test_nodes_stack_converges_and_gives_back_exactly_what_it_set(
    site: Site, core: client.CoreV1Api, foreign_marks: None
) -> None:
    before = _facts(core)
    started = time.monotonic()
    up = _stack(site.ok("stacks", "up", "-c", "nodes"))
    up_s = time.monotonic() - started
    assert up["changes"] > 0
    # The stack's outputs (read from the update's events): the pools and their nodes.
    assert {pool: sorted(nodes) for pool, nodes in up["outputs"]["pools"].items()} == {
        pool: sorted(n for n, p in EXPECTED_POOLS.items() if p == pool)
        for pool in set(EXPECTED_POOLS.values())
    }
    after = _facts(core)
    for node, pool in EXPECTED_POOLS.items():
        labels, taints = after[node]
        assert labels[POOL_LABEL] == labels[POOL_LABEL_LEGACY] == pool, node
        # Every label that was there before is still there, with its value.
        assert {k: labels.get(k) for k in before[node][0]} == before[node][0], node
        assert before[node][1] <= taints, node
    cpu_labels, cpu_taints = after["cpu-1"]
    assert cpu_labels[JOB_LABEL] == "true" and ACCELERATOR_LABEL not in cpu_labels
    assert (JOB_TAINT, "NoSchedule") in cpu_taints and (GPU_TAINT, "NoSchedule") not in cpu_taints
    svc_labels, svc_taints = after["cpu-3"]
    assert JOB_LABEL not in svc_labels and (JOB_TAINT, "NoSchedule") not in svc_taints
    a100_labels, a100_taints = after["a100-1"]
    assert a100_labels[ACCELERATOR_LABEL] == "NVIDIA-A100-SXM4-80GB"
    assert a100_labels["example.com/owner"] == "ops"
    assert {
        (GPU_TAINT, "NoSchedule"),
        (JOB_TAINT, "NoSchedule"),
        ("example.com/dedicated", "NoSchedule"),
    } <= a100_taints
    h100_labels, h100_taints = after["h100-1"]
    assert h100_labels[PREEMPTIBLE_LABEL] == "true"
    assert (PREEMPTIBLE_TAINT, "NoSchedule") in h100_taints

    # A second run changes nothing, and says so.
    started = time.monotonic()
    again = _stack(site.ok("stacks", "preview", "-c", "nodes"))
    preview_s = time.monotonic() - started
    assert again["changes"] == 0, again["steps"]

    # Dropping a pool removes exactly the installer's labels and taints from its node.
    site.write(h100=False)
    plan = _stack(site.ok("stacks", "preview", "-c", "nodes"))
    assert [(s["op"], s["name"], s["diffs"]) for s in plan["steps"]] == [
        ("update", "node-marks", ["node:h100-1"]),
    ]
    site.ok("stacks", "up", "-c", "nodes")
    labels, taints = _facts(core)["h100-1"]
    assert labels == before["h100-1"][0]
    assert taints == before["h100-1"][1]

    # Destroy leaves every node as it was before the installer came, the operator's marks too.
    site.ok("stacks", "destroy", "-c", "nodes", "--yes")
    final = _facts(core)
    for node in EXPECTED_POOLS:
        assert final[node][0] == before[node][0], node
        assert final[node][1] == before[node][1], node
    print(f"\nnodes stack: up {up_s:.1f} s, no-change preview {preview_s:.1f} s")
