"""Bad inventory facts against the live lab: exit 2 naming the node, nothing applied."""

from __future__ import annotations

import json

import pytest

from tests.e2e.stacks.conftest import Site

pytestmark = pytest.mark.e2e


def test_named_node_missing_and_selector_matching_nothing(site: Site) -> None:
    text = site.inventory.read_text(encoding="utf-8")
    try:
        site.inventory.write_text(
            text.replace("nodes: [cpu-1, cpu-2]", "nodes: [cpu-1, cpu-9]"), encoding="utf-8"
        )
        proc = site.installer("stacks", "up", "-c", "nodes")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "node cpu-9 does not exist" in json.loads(proc.stdout)["error"]["message"]
        site.inventory.write_text(
            text.replace("NVIDIA-A100-SXM4-80GB}", "NVIDIA-B200}"), encoding="utf-8"
        )
        proc = site.installer("stacks", "preview", "-c", "nodes")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "matches no node" in json.loads(proc.stdout)["error"]["message"]
        # A GPU model that contradicts what feature discovery reports on a named node.
        site.inventory.write_text(
            text.replace(
                "gpu: {model: NVIDIA-H100-80GB-HBM3, count: 8}",
                "gpu: {model: NVIDIA-H100-80GB-HBM3, count: 4}",
            ),
            encoding="utf-8",
        )
        proc = site.installer("stacks", "preview", "-c", "nodes")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        message = json.loads(proc.stdout)["error"]["message"]
        assert "node h100-1 (pool h100-spot): nvidia.com/gpu.count is 8, the pool says 4" in message
    finally:
        site.inventory.write_text(text, encoding="utf-8")
    # Nothing was applied: the stack has no resources.
    assert not (
        site.state / "pulumi" / "backend" / ".pulumi" / "stacks" / "onprem-nodes" / "lab.json"
    ).exists()
