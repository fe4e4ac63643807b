"""Every GPU shape a site runs, checked against the live nodes as the device plugins show them.

A DGX-style site partitions A100s with MIG: with the device plugin's `mixed` strategy a node
advertises one resource per profile (`nvidia.com/mig-1g.10gb: 7`) and no `nvidia.com/gpu`; with
`single` every slice is an `nvidia.com/gpu` and feature discovery names the product
`<model>-MIG-<profile>`. AMD and Intel nodes advertise `amd.com/gpu` and `gpu.intel.com/i915`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.checks.preflight_kube import evaluate_gpu_nodes
from installer.engines.kube import NodeInfo
from installer.errors import BadInputError
from installer.inventory import Inventory, load_inventory
from installer.site import preset_resources
from installer.stacks.nodeplan import plan_nodes
from tests.unit.stacks.conftest import SITE, cpu_node, write_inventory

A100 = "NVIDIA-A100-SXM4-80GB"

# The stack tests' site (conftest.SITE) with other pools and presets.
SHAPES = (
    SITE[: SITE.index("    node_pools:\n")]
    + """\
    node_pools:
      - {name: cpu, nodes: [cpu-1], cpu: 8, memory: 32Gi}
      - name: mig-mixed
        nodes: [mixed-1]
        cpu: 64
        memory: 512Gi
        gpu: {model: NVIDIA-A100-SXM4-80GB, count: 8, mig_profiles: {1g.10gb: 28, 3g.40gb: 8}}
      - name: mig-single
        nodes: [single-1]
        cpu: 64
        memory: 512Gi
        gpu:
          model: NVIDIA-A100-SXM4-80GB
          count: 8
          mig_profiles: {1g.10gb: 56}
          mig_strategy: single
      - name: mi300
        nodes: [amd-1]
        cpu: 64
        memory: 512Gi
        gpu: {vendor: amd, model: AMD-Instinct-MI300X, count: 8}
    presets:
      - {name: cpu-small, cpu: 2, memory: 8Gi, pools: [cpu]}
      - name: mig-1g
        cpu: 4
        memory: 32Gi
        nvidia_migs: {1g.10gb: {count: 1}}
        pools: [mig-mixed]
      - {name: slice, cpu: 4, memory: 32Gi, nvidia_gpu: {count: 1}, pools: [mig-single]}
      - {name: mi300x8, cpu: 64, memory: 512Gi, amd_gpu: {count: 8}, pools: [mi300]}
"""
    + SITE[SITE.index("    storage:") :]
)


def mixed_node(name: str = "mixed-1") -> NodeInfo:
    """An A100 node partitioned with MIG, as the device plugin's mixed strategy shows it."""
    return NodeInfo(
        name=name,
        labels={
            "nvidia.com/gpu.product": A100,
            "nvidia.com/gpu.count": "8",
            "nvidia.com/mig.strategy": "mixed",
        },
        allocatable={
            "cpu": "128",
            "memory": "1Ti",
            "nvidia.com/mig-1g.10gb": "28",
            "nvidia.com/mig-3g.40gb": "8",
        },
    )


def single_node(name: str = "single-1") -> NodeInfo:
    """An A100 node whose 56 slices the single strategy shows as GPUs."""
    return NodeInfo(
        name=name,
        labels={
            "nvidia.com/gpu.product": f"{A100}-MIG-1g.10gb",
            "nvidia.com/gpu.count": "56",
            "nvidia.com/mig.strategy": "single",
        },
        allocatable={"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": "56"},
    )


def amd_node(name: str = "amd-1", gpus: str = "8") -> NodeInfo:
    return NodeInfo(
        name=name, labels={}, allocatable={"cpu": "128", "memory": "1Ti", "amd.com/gpu": gpus}
    )


def live() -> list[NodeInfo]:
    return [cpu_node("cpu-1"), mixed_node(), single_node(), amd_node()]


@pytest.fixture
def shapes(tmp_path: Path) -> Inventory:
    return load_inventory(write_inventory(tmp_path, SHAPES))


def _refused(inventory: str, tmp_path: Path) -> str:
    with pytest.raises(BadInputError) as err:
        load_inventory(write_inventory(tmp_path, inventory))
    return str(err.value)


def test_every_shape_matches_its_live_nodes(shapes: Inventory) -> None:
    pools = {a.node: a.pool for a in plan_nodes(shapes.clusters[0], live())}
    assert pools == {
        "cpu-1": "cpu",
        "mixed-1": "mig-mixed",
        "single-1": "mig-single",
        "amd-1": "mi300",
    }


def test_preflight_finds_every_gpu_pool_as_the_inventory_says(shapes: Inventory) -> None:
    for pool in shapes.clusters[0].node_pools:
        if pool.gpu is not None:
            finding = evaluate_gpu_nodes(pool, live())
            assert finding.ok and finding.severity is None, (pool.name, finding.message)


def test_a_mixed_pool_on_nodes_of_the_single_strategy_names_the_strategy(
    shapes: Inventory,
) -> None:
    wrong = [cpu_node("cpu-1"), single_node("mixed-1"), single_node(), amd_node()]
    with pytest.raises(BadInputError) as err:
        plan_nodes(shapes.clusters[0], wrong)
    text = str(err.value)
    assert (
        "node mixed-1 (pool mig-mixed): it has no allocatable nvidia.com/mig-1g.10gb (is the"
        " device plugin running with mig.strategy=mixed?)" in text
    )
    assert "nvidia.com/mig.strategy is single, the pool says mixed" in text
    assert "nvidia.com/gpu.product is NVIDIA-A100-SXM4-80GB-MIG-1g.10gb" in text


def test_fewer_slices_than_the_pool_says_are_named(shapes: Inventory) -> None:
    short = mixed_node()
    short.allocatable["nvidia.com/mig-3g.40gb"] = "4"
    with pytest.raises(BadInputError, match=r"allocatable nvidia\.com/mig-3g\.40gb is 4, the pool"):
        plan_nodes(shapes.clusters[0], [cpu_node("cpu-1"), short, single_node(), amd_node()])


def test_an_amd_node_without_its_device_plugin_is_named(shapes: Inventory) -> None:
    bare = NodeInfo(name="amd-1", labels={}, allocatable={"cpu": "128", "memory": "1Ti"})
    with pytest.raises(BadInputError, match=r"amd-1 \(pool mi300\): it has no allocatable amd"):
        plan_nodes(shapes.clusters[0], [cpu_node("cpu-1"), mixed_node(), single_node(), bare])


def test_presets_ask_for_the_resource_their_pool_advertises(shapes: Inventory) -> None:
    presets = {p.name: p for p in shapes.clusters[0].presets}
    assert preset_resources(presets["mig-1g"])["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in preset_resources(presets["mig-1g"])
    assert preset_resources(presets["slice"])["nvidia.com/gpu"] == "1"
    assert preset_resources(presets["mi300x8"])["amd.com/gpu"] == "8"


def test_a_whole_node_preset_fits_its_node_exactly(shapes: Inventory) -> None:
    (mi300,) = [p for p in shapes.clusters[0].node_pools if p.name == "mi300"]
    (whole,) = [p for p in shapes.clusters[0].presets if p.name == "mi300x8"]
    assert (whole.cpu, whole.memory) == (mi300.cpu, mi300.memory)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (
            "nvidia_migs: {1g.10gb: {count: 1}}",
            "nvidia_gpu: {count: 1}",
            "pool 'mig-mixed' has no whole GPUs",
        ),
        (
            "nvidia_gpu: {count: 1}, pools: [mig-single]",
            "nvidia_migs: {1g.10gb: {count: 1}}, pools: [mig-single]",
            "advertises its MIG slices as nvidia.com/gpu",
        ),
        (
            "nvidia_gpu: {count: 1}, pools: [mig-single]",
            "nvidia_gpu: {count: 57}, pools: [mig-single]",
            "57 MIG slices > 56 per node",
        ),
        (
            "nvidia_migs: {1g.10gb: {count: 1}}",
            "nvidia_migs: {3g.40gb: {count: 9}}",
            "MIG 3g.40gb x9 > 8 per node",
        ),
        ("amd_gpu: {count: 8}", "amd_gpu: {count: 9}", "9 GPUs > 8 per node"),
        (
            "mig_profiles: {1g.10gb: 56}",
            "mig_profiles: {1g.10gb: 28, 2g.20gb: 12}",
            "the single MIG strategy advertises every slice as nvidia.com/gpu",
        ),
    ],
)
def test_a_preset_or_pool_that_cannot_be_is_refused_at_validate_time(
    tmp_path: Path, old: str, new: str, why: str
) -> None:
    assert SHAPES.count(old) == 1
    text = _refused(SHAPES.replace(old, new), tmp_path)
    assert why in text
    assert "onprem.yml:" in text  # file:line
