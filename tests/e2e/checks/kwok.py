"""Extra kwok nodes for failure cases, named `chk-...`; the standard lab nodes stay untouched."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from kubernetes import client, config

from installer.site import NodeTaint
from tests.fixtures.lab import Lab


@dataclass
class FakeNode:
    """A node kwok plays, with the labels, taints and resources a test wants."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: list[NodeTaint] = field(default_factory=list)
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 0
    unschedulable: bool = False
    extended: Mapping[str, str] = field(default_factory=dict)
    """Other allocatable resources (`nvidia.com/mig-1g.10gb`, `amd.com/gpu`)."""

    def body(self) -> dict:  # type: ignore[type-arg]
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        resources.update(self.extended)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                # No `type: kwok` label: lab/up prunes labelled nodes beyond its topology, and
                # kwok picks nodes by the annotation alone.
                "labels": {"kubernetes.io/hostname": self.name, **self.labels},
            },
            "spec": {
                "unschedulable": self.unschedulable,
                "taints": [
                    {"key": t.key, "value": t.value, "effect": t.effect} for t in self.taints
                ],
            },
            "status": {"allocatable": resources, "capacity": resources},
        }


def core(lab: Lab) -> client.CoreV1Api:
    """The admin's core API of the lab cluster."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(lab.kubeconfig)))


# Taints the node lifecycle controller sets on a node that is not (yet) Ready. It lifts them
# a moment after kwok reports Ready, so a node is usable only once they are gone too.
NOT_READY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def wait_ready(api: client.CoreV1Api, name: str, timeout_s: float = 60) -> None:
    """Until kwok reports the node Ready and the lifecycle controller has lifted its taints."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node = api.read_node(name)
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        not_ready = [t.key for t in node.spec.taints or [] if t.key in NOT_READY_TAINTS]
        if ready and ready[0].status == "True" and not not_ready:
            return
        time.sleep(0.3)
    raise AssertionError(f"kwok did not make {name} Ready and untainted in {timeout_s}s")


@contextmanager
def fake_nodes(lab: Lab, nodes: list[FakeNode]) -> Iterator[client.CoreV1Api]:
    """Create the nodes (kwok makes them Ready) and delete them afterwards."""
    api = core(lab)
    assert all(n.name.startswith("chk-") for n in nodes)
    created = []
    try:
        for node in nodes:
            api.create_node(node.body())
            created.append(node.name)
        for node in nodes:
            wait_ready(api, node.name)
        yield api
    finally:
        for name in created:
            api.delete_node(name)


def set_taints(api: client.CoreV1Api, name: str, taints: list[NodeTaint]) -> None:
    """Replace a fake node's taints (a merge patch of spec.taints)."""
    body = {
        "spec": {"taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]}
    }
    api.patch_node(name, body)
