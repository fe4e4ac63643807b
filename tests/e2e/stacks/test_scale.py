"""The nodes stack at 1000 nodes: converges, previews zero changes, repairs one node's drift,
and gives every node back exactly as it was.

The cluster is the stacks' own, so the extra nodes are this test's (named `stacks-bench-NNNN`,
tainted so nothing else lands there) and are deleted at the end. They carry no kwok annotation:
nothing here needs them Ready, and kwok's heartbeats for a thousand nodes would only load the
machine (so the node lifecycle controller taints them not-ready meanwhile, see `_facts`).
Times are printed for docs/benchmarks.md, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from installer.site import JOB_TAINT, POOL_LABEL
from tests.e2e.stacks.conftest import Site

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BENCH_LABEL = "onprem-installer.test/bench"
TOTAL_NODES = 1000
LAB_NODES = 6

Facts = dict[str, tuple[dict[str, str], set[tuple[str, str, str]]]]


def _node(name: str) -> client.V1Node:
    capacity = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name,
            # No `type: kwok` label: lab/up deletes kwok nodes outside its topology by that label.
            labels={"kubernetes.io/hostname": name, BENCH_LABEL: "stacks"},
        ),
        spec=client.V1NodeSpec(
            taints=[client.V1Taint(key=BENCH_LABEL, value="stacks", effect="NoSchedule")]
        ),
        status=client.V1NodeStatus(allocatable=capacity, capacity=capacity),
    )


def _facts(core: client.CoreV1Api) -> Facts:
    """Each node's labels and taints, less the node lifecycle controller's taints: the bench
    nodes never turn Ready, so it adds and changes its `node.kubernetes.io/` taints meanwhile (the
    installer's guarded writes keep them, as they keep any taint of someone else's)."""
    return {
        n.metadata.name: (
            dict(n.metadata.labels or {}),
            {
                (t.key, t.value or "", t.effect)
                for t in n.spec.taints or []
                if not t.key.startswith("node.kubernetes.io/")
            },
        )
        for n in core.list_node().items
    }


@pytest.fixture
def bench_nodes(core: client.CoreV1Api) -> Iterator[list[str]]:
    names = [f"stacks-bench-{i:04d}" for i in range(TOTAL_NODES - LAB_NODES)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: core.create_node(_node(name)), names))
    try:
        yield names
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(core.delete_node, names))


def test_a_thousand_nodes_converge_preview_zero_changes_and_go_back_exactly(
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
    before = _facts(core)
    assert len(before) == TOTAL_NODES
    destroyed = False
    try:
        started = time.monotonic()
        site.ok("stacks", "up", "-c", "nodes")
        up_s = time.monotonic() - started
        after = _facts(core)
        labelled = [n for n, (labels, _) in after.items() if labels.get(POOL_LABEL)]
        assert len(labelled) == TOTAL_NODES
        for name in bench_nodes:
            labels, taints = after[name]
            assert labels[POOL_LABEL] == "bench", name
            assert (JOB_TAINT, "true", "NoSchedule") in taints, name
            assert before[name][1] <= taints, name  # the node's own taint stays

        started = time.monotonic()
        preview = site.ok("stacks", "preview", "-c", "nodes")["stacks"][0]
        preview_s = time.monotonic() - started
        assert preview["changes"] == 0, preview["steps"][:5]

        # One node's drift is found by a refresh and repaired by the next up, that node only.
        victim = bench_nodes[len(bench_nodes) // 2]
        core.patch_node(victim, {"metadata": {"labels": {POOL_LABEL: None}}})
        refreshed = site.ok("stacks", "refresh", "-c", "nodes")["stacks"][0]
        assert refreshed["counts"].get("update") == 1, refreshed["counts"]
        started = time.monotonic()
        repaired = site.ok("stacks", "up", "-c", "nodes")["stacks"][0]
        repair_s = time.monotonic() - started
        assert [s["diffs"] for s in repaired["steps"]] == [[f"node:{victim}"]]
        assert core.read_node(victim).metadata.labels[POOL_LABEL] == "bench"

        started = time.monotonic()
        site.ok("stacks", "destroy", "-c", "nodes", "--yes")
        destroy_s = time.monotonic() - started
        destroyed = True
        assert _facts(core) == before
    finally:
        if not destroyed:  # the lab's own nodes are shared with the other stack tests
            site.installer("stacks", "destroy", "-c", "nodes", "--yes")
        site.inventory.write_text(text, encoding="utf-8")
    print(
        f"\n{TOTAL_NODES} nodes: up {up_s:.1f} s, no-change preview {preview_s:.1f} s,"
        f" one node repaired {repair_s:.1f} s, destroy {destroy_s:.1f} s"
    )
