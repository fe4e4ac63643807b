"""The nodes stack: pool membership against live nodes, and the resources the program builds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from installer.engines.kube import NodeInfo
from installer.errors import BadInputError
from installer.inventory import Inventory
from installer.phases.base import PhaseContext
from installer.phases.stacks import StackPhase, _nodes
from installer.site import (
    ACCELERATOR_LABEL,
    JOB_TAINT,
    POOL_LABEL,
    POOL_LABEL_LEGACY,
    PREEMPTIBLE_TAINT,
    pool_labels,
)
from installer.stacks import inputs, program_of
from installer.stacks.common import KubeTarget
from installer.stacks.inputs import nodes_input, stack_input
from installer.stacks.nodeplan import plan_nodes
from installer.stacks.nodes import NodesArgs
from installer.stacks.taints import reconcile_taints
from installer.state import StateDir
from tests.unit.stacks.conftest import cpu_node, gpu_node, lab_nodes
from tests.unit.stacks.mocks import RecordingMocks, run_program

DYNAMIC = "pulumi-python:dynamic:Resource"


def _args(site: Inventory, live: list[NodeInfo] | None = None) -> NodesArgs:
    cluster = site.clusters[0]
    si = nodes_input(
        site, cluster, StateDir(Path("/nonexistent")), read=lambda _t: live or lab_nodes()
    )
    assert isinstance(si.args, NodesArgs)
    return si.args


def _run(args: NodesArgs) -> RecordingMocks:
    config = {"onprem-nodes:args": json.dumps(args.model_dump(mode="json"))}
    return run_program(program_of("nodes"), config=config, project="onprem-nodes")


# --- pool membership ------------------------------------------------------------------------


def test_selector_and_names_resolve_to_live_nodes(site: Inventory) -> None:
    args = _args(site)
    assert [(a.node, a.pool) for a in args.nodes] == [
        ("a100-1", "a100"),
        ("a100-2", "a100"),
        ("cpu-1", "cpu"),
        ("cpu-2", "cpu"),
        ("h100-1", "h100-spot"),
    ]


def test_named_node_missing_is_bad_input_naming_it(site: Inventory) -> None:
    live = [n for n in lab_nodes() if n.name != "cpu-2"]
    with pytest.raises(BadInputError, match=r"pool cpu: node cpu-2 does not exist"):
        plan_nodes(site.clusters[0], live)


def test_selector_matching_nothing_is_bad_input(site: Inventory) -> None:
    live = [n for n in lab_nodes() if not n.name.startswith("a100")]
    with pytest.raises(BadInputError, match=r"pool a100: selector nvidia.com/gpu.product="):
        plan_nodes(site.clusters[0], live)


def test_gpu_product_contradicting_the_pool_names_the_node(site: Inventory) -> None:
    live = [*lab_nodes()[:-1], gpu_node("h100-1", "NVIDIA-L40S")]
    with pytest.raises(BadInputError) as err:
        plan_nodes(site.clusters[0], live)
    assert (
        "node h100-1 (pool h100-spot): nvidia.com/gpu.product is NVIDIA-L40S, the pool says"
        " NVIDIA-H100-80GB-HBM3" in str(err.value)
    )


def test_gpu_count_contradicting_the_pool_names_the_node(site: Inventory) -> None:
    live = [*lab_nodes()[:-1], gpu_node("h100-1", "NVIDIA-H100-80GB-HBM3", count=4)]
    with pytest.raises(BadInputError) as err:
        plan_nodes(site.clusters[0], live)
    text = str(err.value)
    assert "node h100-1 (pool h100-spot): nvidia.com/gpu.count is 4, the pool says 8" in text
    assert "allocatable nvidia.com/gpu is 4" in text


def test_gpu_pool_node_without_the_device_plugin_is_bad_input(site: Inventory) -> None:
    bare = replace(gpu_node("h100-1", "NVIDIA-H100-80GB-HBM3"), allocatable={"cpu": "128"})
    with pytest.raises(BadInputError, match=r"h100-1.*no allocatable nvidia\.com/gpu"):
        plan_nodes(site.clusters[0], [*lab_nodes()[:-1], bare])


def test_node_smaller_than_the_pool_claims_is_bad_input(site: Inventory) -> None:
    small = replace(cpu_node("cpu-2"), allocatable={"cpu": "4", "memory": "128Gi"})
    live = [small if n.name == "cpu-2" else n for n in lab_nodes()]
    with pytest.raises(BadInputError, match=r"node cpu-2 \(pool cpu\): allocatable cpu is 4"):
        plan_nodes(site.clusters[0], live)


def test_node_selected_by_two_pools_is_bad_input(site: Inventory) -> None:
    # h100-1 is named by h100-spot; make the a100 selector match it too.
    twin = gpu_node("h100-1", "NVIDIA-A100-SXM4-80GB")
    cluster = site.clusters[0]
    pools = [
        p.model_copy(update={"gpu": None}) if p.name == "h100-spot" else p
        for p in cluster.node_pools
    ]
    with pytest.raises(BadInputError, match="node h100-1 is in pool a100 and in pool h100-spot"):
        plan_nodes(cluster.model_copy(update={"node_pools": pools}), [*lab_nodes()[:-1], twin])


# --- the program ----------------------------------------------------------------------------


def _marks(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    """The one `node-marks` resource's entries, by node."""
    (marks,) = mocks.of_type(DYNAMIC)
    assert marks.name == "node-marks"
    return {k.removeprefix("node:"): v for k, v in marks.inputs.items() if k.startswith("node:")}


def test_one_resource_holds_every_pool_node_with_its_labels(site: Inventory) -> None:
    mocks = _run(_args(site))
    assert mocks.of_type("kubernetes:core/v1:NodePatch") == []
    assert mocks.of_type("pulumi:providers:kubernetes") == []  # no provider plugin to start
    entries = _marks(mocks)
    assert sorted(entries) == ["a100-1", "a100-2", "cpu-1", "cpu-2", "h100-1"]
    a100 = entries["a100-1"]
    pool = site.clusters[0].node_pools[1]
    assert a100["pool"] == pool.name == "a100"
    for key, value in pool_labels(pool).items():
        assert a100["labels"][key] == value
    assert a100["labels"][POOL_LABEL] == a100["labels"][POOL_LABEL_LEGACY] == "a100"
    assert a100["labels"][ACCELERATOR_LABEL] == "NVIDIA-A100-SXM4-80GB"
    assert ACCELERATOR_LABEL not in entries["cpu-1"]["labels"]
    # Bound to the inventory's kubeconfig and context.
    (marks,) = mocks.of_type(DYNAMIC)
    assert marks.inputs["context"] == "lab"
    assert marks.inputs["kubeconfig"].endswith("/kubeconfig")


def test_taints_per_node_follow_the_platform_keys(site: Inventory) -> None:
    entries = _marks(_run(_args(site)))
    keys = {name: {(t["key"], t["effect"]) for t in e["taints"]} for name, e in entries.items()}
    assert keys["cpu-1"] == {(JOB_TAINT, "NoSchedule")}
    assert keys["a100-1"] == {(JOB_TAINT, "NoSchedule"), ("nvidia.com/gpu", "NoSchedule")}
    assert keys["h100-1"] == {
        (JOB_TAINT, "NoSchedule"),
        ("nvidia.com/gpu", "NoSchedule"),
        (PREEMPTIBLE_TAINT, "NoSchedule"),
    }


def test_pool_without_jobs_or_gpu_gets_labels_and_no_taints(site: Inventory) -> None:
    cluster = site.clusters[0]
    pools = [
        p.model_copy(update={"jobs": False}) if p.name == "cpu" else p for p in cluster.node_pools
    ]
    quiet = cluster.model_copy(update={"node_pools": pools})
    args = NodesArgs(cluster="main", kube=_args(site).kube, nodes=plan_nodes(quiet, lab_nodes()))
    cpu = _marks(_run(args))["cpu-1"]
    assert cpu["taints"] == []
    assert cpu["labels"] == {POOL_LABEL: "cpu", POOL_LABEL_LEGACY: "cpu"}


# --- taint arithmetic (what the dynamic provider writes to the node) -------------------------

JOB = {"key": JOB_TAINT, "value": "true", "effect": "NoSchedule"}
GPU = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
SPOT = {"key": PREEMPTIBLE_TAINT, "value": "true", "effect": "NoSchedule"}


def test_others_taints_keep_their_place_and_fields_and_only_ours_go_away() -> None:
    theirs = [
        {
            "key": "node.kubernetes.io/unschedulable",
            "effect": "NoSchedule",
            "timeAdded": "2026-01-01T00:00:00Z",
        },
        {"key": "example.com/dedicated", "value": "db", "effect": "NoExecute"},
    ]
    plan = reconcile_taints(theirs, [JOB], [], [])
    assert plan.taints == [*theirs, JOB]
    assert plan.owned == [JOB]
    gone = reconcile_taints(plan.taints, [], plan.owned, plan.displaced)
    assert gone.taints == theirs
    assert gone.owned == [] and gone.displaced == []


def test_a_taint_already_there_with_our_value_stays_its_owners() -> None:
    # The GPU operator tainted the node before the installer came.
    plan = reconcile_taints([GPU], [JOB, GPU], [], [])
    assert plan.taints == [GPU, JOB]
    assert plan.owned == [JOB]
    assert reconcile_taints(plan.taints, [], plan.owned, plan.displaced).taints == [GPU]


def test_a_taint_with_another_value_is_taken_over_and_given_back() -> None:
    theirs = {"key": "nvidia.com/gpu", "value": "old", "effect": "NoSchedule"}
    other_effect = {"key": "nvidia.com/gpu", "value": "x", "effect": "NoExecute"}
    plan = reconcile_taints([theirs, other_effect], [GPU], [], [])
    assert plan.taints == [GPU, other_effect]
    assert plan.owned == [GPU] and plan.displaced == [theirs]
    back = reconcile_taints(plan.taints, [], plan.owned, plan.displaced)
    assert back.taints == [other_effect, theirs]


def test_update_removes_only_what_the_installer_dropped() -> None:
    other = {"key": "example.com/x", "value": "", "effect": "NoSchedule"}
    first = reconcile_taints([other], [JOB, SPOT], [], [])
    second = reconcile_taints(first.taints, [JOB], first.owned, first.displaced)
    assert second.taints == [other, JOB]
    assert second.owned == [JOB]


def test_a_second_run_changes_nothing() -> None:
    first = reconcile_taints([GPU], [JOB, GPU, SPOT], [], [])
    second = reconcile_taints(first.taints, [JOB, GPU, SPOT], first.owned, first.displaced)
    assert second == first


def test_a_run_reads_each_clusters_nodes_once(
    site: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plan, the inputs' hashes (the journal) and the runs of every phase share one listing of
    # a cluster's nodes; the next run lists them afresh.
    reads: list[str] = []

    def read(target: KubeTarget) -> list[NodeInfo]:
        reads.append(target.kubeconfig)
        return lab_nodes()

    monkeypatch.setattr(inputs, "live_nodes", read)

    def run_context() -> PhaseContext:
        return PhaseContext(
            inventory=site,
            inventory_path=tmp_path / "site.yml",
            state=StateDir(tmp_path / "state"),
            run_dir=tmp_path,
            emit=lambda event: None,
        )

    ctx = run_context()
    first = StackPhase("nodes").inputs(ctx)
    narrowed = ctx.for_cluster("main")
    assert StackPhase("nodes").inputs(narrowed) == first
    assert StackPhase("platform").inputs(narrowed)
    assert stack_input("nodes", site, site.clusters[0], ctx.state, _nodes(narrowed)).args
    assert len(reads) == 1
    StackPhase("nodes").inputs(run_context())
    assert len(reads) == 2
