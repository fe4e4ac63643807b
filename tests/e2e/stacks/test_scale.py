"""The nodes stack at 200 nodes: converges, then a preview reports zero changes.

The lab is shared, so the extra nodes are this test's own (kwok-managed, named
`stacks-bench-NNN`, tainted so nothing else lands there) and are deleted at the end.
Times go to docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from installer.site import POOL_LABEL
from tests.e2e.stacks.conftest import Site

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BENCH_LABEL = "onprem-installer.test/bench"
TOTAL_NODES = 200
LAB_NODES = 6


def _node(name: str) -> client.V1Node:
    capacity = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={"kwok.x-k8s.io/node": "fake"},
            # No `type: kwok` label: lab/up deletes kwok nodes outside its topology by that label.
            labels={"kubernetes.io/hostname": name, BENCH_LABEL: "stacks"},
        ),
        spec=client.V1NodeSpec(
            taints=[client.V1Taint(key=BENCH_LABEL, value="stacks", effect="NoSchedule")]
        ),
        status=client.V1NodeStatus(allocatable=capacity, capacity=capacity),
    )


@pytest.fixture
def bench_nodes(core: client.CoreV1Api) -> Iterator[list[str]]:
    names = [f"stacks-bench-{i:03d}" for i in range(TOTAL_NODES - LAB_NODES)]
    for name in names:
        core.create_node(_node(name))
    try:
        yield names
    finally:
        for name in names:
            core.delete_node(name)


def test_two_hundred_nodes_converge_and_preview_zero_changes(
    site: Site, core: client.CoreV1Api, bench_nodes: list[str]
) -> None:
    text = site.inventory.read_text(encoding="utf-8")
    bench_pool = (
        "      - name: bench\n"
        f"        selector: {{{BENCH_LABEL}: stacks}}\n"
        "        cpu: 30\n        memory: 120Gi\n"
        "        taints: [{key: " + BENCH_LABEL + ", value: stacks}]\n"
    )
    site.inventory.write_text(
        text.replace("    presets:\n", bench_pool + "    presets:\n", 1), encoding="utf-8"
    )
    try:
        started = time.monotonic()
        up = site.ok("stacks", "up", "-c", "nodes")["stacks"][0]
        up_s = time.monotonic() - started
        assert up["counts"]["create"] >= 2 * TOTAL_NODES - 1
        labelled = [n for n in core.list_node().items if n.metadata.labels.get(POOL_LABEL)]
        assert len(labelled) == TOTAL_NODES
        started = time.monotonic()
        preview = site.ok("stacks", "preview", "-c", "nodes")["stacks"][0]
        preview_s = time.monotonic() - started
        assert preview["changes"] == 0, preview["steps"][:5]
        started = time.monotonic()
        site.ok("stacks", "destroy", "-c", "nodes", "--yes")
        destroy_s = time.monotonic() - started
    finally:
        site.inventory.write_text(text, encoding="utf-8")
    print(
        f"\n{TOTAL_NODES} nodes: up {up_s:.1f} s, no-change preview {preview_s:.1f} s,"
        f" destroy {destroy_s:.1f} s"
    )
