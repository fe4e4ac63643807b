"""Inventories and live node lists for the stack tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.engines.kube import NodeInfo
from installer.inventory import Inventory, load_inventory

SITE = """\
apiVersion: installer/v1
site: {name: lab, domain: ml.example.com, state_dir: ./state}
aux_vm:
  address: 192.0.2.10
  ssh: {user: ops, private_key: file:id_ed25519, known_hosts: known_hosts}
clusters:
  - name: main
    kubeconfig: kubeconfig
    context: lab
    ingress_ips: [192.0.2.20]
    node_pools:
      - {name: cpu, nodes: [cpu-1, cpu-2], cpu: 8, memory: 32Gi}
      - name: a100
        selector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}
        cpu: 64
        memory: 512Gi
        gpu: {model: NVIDIA-A100-SXM4-80GB, count: 8, memory: 80Gi}
      - name: h100-spot
        nodes: [h100-1]
        cpu: 96
        memory: 1Ti
        gpu: {model: NVIDIA-H100-80GB-HBM3, count: 8}
        preemptible: true
    presets:
      - {name: cpu-small, credits_per_hour: "0.5", cpu: 2, memory: 8Gi, pools: [cpu]}
      - {name: a100x1, cpu: 8, memory: 64Gi, nvidia_gpu: {count: 1}, pools: [a100]}
      - name: h100x2-spot
        cpu: 16
        memory: 128Gi
        nvidia_gpu: {count: 2, model: NVIDIA-H100-80GB-HBM3}
        preemptible: true
        pools: [h100-spot]
    storage: {engine: localpv-hostpath}
    keycloak: {mode: external, url: "https://sso.example.com", admin_password: "env:KC_PASS"}
"""


def gpu_node(name: str, product: str, count: int = 8) -> NodeInfo:
    """A GPU node as feature discovery and the device plugin report it."""
    return NodeInfo(
        name=name,
        labels={
            "kubernetes.io/hostname": name,
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": str(count),
        },
        allocatable={"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": str(count)},
    )


def cpu_node(name: str) -> NodeInfo:
    """A CPU node."""
    return NodeInfo(
        name=name,
        labels={"kubernetes.io/hostname": name},
        allocatable={"cpu": "32", "memory": "128Gi"},
    )


def lab_nodes() -> list[NodeInfo]:
    """The lab's topology (lab/kube/topology.txt)."""
    return [
        cpu_node("cpu-1"),
        cpu_node("cpu-2"),
        cpu_node("cpu-3"),
        gpu_node("a100-1", "NVIDIA-A100-SXM4-80GB"),
        gpu_node("a100-2", "NVIDIA-A100-SXM4-80GB"),
        gpu_node("h100-1", "NVIDIA-H100-80GB-HBM3"),
    ]


def write_inventory(folder: Path, text: str = SITE) -> Path:
    """Write an inventory (and a kubeconfig beside it) into `folder`."""
    (folder / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    path = folder / "onprem.yml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Inventory:
    """The test site, loaded from a file like an operator's."""
    return load_inventory(write_inventory(tmp_path))
