"""Every GPU shape on the lab cluster: MIG (mixed and single strategy), AMD and a whole-node pool.

kwok plays nodes that advertise what each shape's device plugin advertises (and carry feature
discovery's labels); the pools and presets say the same in the inventory. Preflight finds every
pool as the inventory says, the nodes phase labels and taints them (its own state folder, so
the lab site's stacks are not touched), and verify's test pod of each preset lands on its pool,
asking for the resource the pool advertises.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from installer.checks import Status, run_preflight, run_verify
from installer.inventory import load_inventory
from installer.site import POOL_LABEL
from tests.e2e.bootstrap.cli import installer
from tests.e2e.checks.conftest import SiteFactory, by
from tests.e2e.checks.kwok import FakeNode, core, fake_nodes
from tests.fixtures.lab import Lab

pytestmark = pytest.mark.e2e

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"


class Shapes:
    """Four GPU pools on nodes of their own (`chk-<tag>-*`), and a preset or two for each."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag

        def pool(name: str, gpu: dict[str, Any], cpu: int = 64, memory: str = "512Gi") -> Any:
            return {
                "name": f"{name}-{tag}",
                "nodes": [f"chk-{tag}-{name}"],
                "cpu": cpu,
                "memory": memory,
                "gpu": gpu,
            }

        self.pools = [
            pool(
                "mixed", {"model": A100, "count": 8, "mig_profiles": {"1g.10gb": 28, "3g.40gb": 8}}
            ),
            pool(
                "single",
                {
                    "model": A100,
                    "count": 8,
                    "mig_profiles": {"1g.10gb": 56},
                    "mig_strategy": "single",
                },
            ),
            pool("amd", {"vendor": "amd", "model": "AMD-Instinct-MI300X", "count": 8}),
            pool("h100", {"model": H100, "count": 8, "memory": "80Gi"}, cpu=96, memory="1Ti"),
        ]

        def preset(name: str, pool: str, **asks: Any) -> dict[str, Any]:
            return {"name": f"{name}-{tag}", "cpu": 4, "memory": "32Gi", "pools": [pool], **asks}

        mixed, single, amd, h100 = (p["name"] for p in self.pools)
        self.presets = [
            preset("mig1g", mixed, nvidia_migs={"1g.10gb": {"count": 1}}),
            preset("mig3g", mixed, nvidia_migs={"3g.40gb": {"count": 2}}),
            preset("slice", single, nvidia_gpu={"count": 1}),
            preset("mi300", amd, amd_gpu={"count": 2}),
            # The whole node, exactly.
            {**preset("h100all", h100, nvidia_gpu={"count": 8}), "cpu": 96, "memory": "1Ti"},
        ]
        self.pool_of_preset = {p["name"]: p["pools"][0] for p in self.presets}

    def nodes(self) -> list[FakeNode]:
        """Each pool's node as its device plugin and feature discovery show it (not labelled
        for a pool yet: the nodes phase does that)."""
        mixed, single, amd, h100 = (p["nodes"][0] for p in self.pools)
        gfd = {"nvidia.com/gpu.present": "true"}
        return [
            FakeNode(
                mixed,
                {
                    **gfd,
                    "nvidia.com/gpu.product": A100,
                    "nvidia.com/gpu.count": "8",
                    "nvidia.com/mig.strategy": "mixed",
                },
                cpu="128",
                memory="1Ti",
                extended={"nvidia.com/mig-1g.10gb": "28", "nvidia.com/mig-3g.40gb": "8"},
            ),
            FakeNode(
                single,
                {
                    **gfd,
                    "nvidia.com/gpu.product": f"{A100}-MIG-1g.10gb",
                    "nvidia.com/gpu.count": "56",
                    "nvidia.com/mig.strategy": "single",
                },
                cpu="128",
                memory="1Ti",
                gpus=56,
            ),
            FakeNode(amd, {}, cpu="128", memory="1Ti", extended={"amd.com/gpu": "8"}),
            FakeNode(
                h100,
                {
                    **gfd,
                    "nvidia.com/gpu.product": H100,
                    "nvidia.com/gpu.count": "8",
                    "nvidia.com/gpu.memory": "81559",
                },
                # A core and a little memory above the pool's: room for a daemon set's pod
                # beside the whole-node preset's (the pool says what jobs may take).
                cpu="97",
                memory="1040Gi",
                gpus=8,
            ),
        ]

    def edit(self, data: dict[str, Any]) -> None:
        cluster = data["clusters"][0]
        cluster["node_pools"] = self.pools
        cluster["presets"] = self.presets


@pytest.fixture
def shapes() -> Shapes:
    return Shapes()


def test_every_gpu_shape_passes_preflight_the_nodes_phase_and_verify(
    lab: Lab, site: SiteFactory, shapes: Shapes, tmp_path: Path
) -> None:
    def edit(data: dict[str, Any]) -> None:
        shapes.edit(data)
        # The nodes phase's stack lives in a state folder of the test's own.
        data["site"]["state_dir"] = str(tmp_path / "state")

    path = site(edit)
    with fake_nodes(lab, shapes.nodes()) as api:
        preflight = run_preflight(load_inventory(path))
        gpu = by(preflight, "kube.gpu")
        assert len(gpu) == len(shapes.pools)
        assert all(s is Status.PASS for s, _ in gpu.values()), gpu

        rc, _, tail = installer(
            "bootstrap", "-i", str(path), "--yes", "--only", "nodes",
            log_dir=tmp_path / "runs", timeout=600,
        )  # fmt: skip
        assert rc == 0, f"the nodes phase refused a shape (exit {rc}):\n{tail}"
        for pool in shapes.pools:
            (name,) = pool["nodes"]
            assert api.read_node(name).metadata.labels.get(POOL_LABEL) == pool["name"]

        report = run_verify(load_inventory(path))
        placed = by(report, "sched.preset")
        assert len(placed) == len(shapes.presets)
        for preset, pool_name in shapes.pool_of_preset.items():
            status, message = placed[f"cluster/lab/preset/{preset}"]
            (node,) = next(p["nodes"] for p in shapes.pools if p["name"] == pool_name)
            assert status is Status.PASS, (preset, message)
            assert f"scheduled on {node} and started" in message, (preset, message)


def test_a_mixed_pool_on_a_node_of_the_single_strategy_is_refused_by_name(
    lab: Lab, site: SiteFactory, shapes: Shapes, tmp_path: Path
) -> None:
    mixed, single, *_ = shapes.nodes()
    wrong = FakeNode(mixed.name, single.labels, cpu="128", memory="1Ti", gpus=56)

    def edit(data: dict[str, Any]) -> None:
        shapes.edit(data)
        data["site"]["state_dir"] = str(tmp_path / "state")

    path = site(edit)
    with fake_nodes(lab, [wrong, *shapes.nodes()[1:]]):
        preflight = run_preflight(load_inventory(path))
        status, message = by(preflight, "kube.gpu")[f"cluster/lab/pool/{shapes.pools[0]['name']}"]
        rc, _, tail = installer(
            "bootstrap", "-i", str(path), "--yes", "--only", "nodes",
            log_dir=tmp_path / "runs", timeout=600,
        )  # fmt: skip
        labels = core(lab).read_node(mixed.name).metadata.labels
    assert status is Status.FAIL
    assert "no allocatable nvidia.com/mig-1g.10gb" in message
    assert rc == 2, tail
    assert f"node {mixed.name} (pool {shapes.pools[0]['name']})" in tail
    assert "mig.strategy=mixed" in tail
    assert POOL_LABEL not in labels  # refused before anything was labelled
