"""The nodes stack: each pool's nodes carry the platform's labels and taints.

One resource, `node-marks` (`installer.stacks.nodemarks`), sets them on every pool node: labels by
server-side apply (field manager `onprem-installer`, forced, so the installer is authoritative for
the keys it sets; a label map is owned per key, so other labels are never touched and giving
them back removes exactly the installer's keys), taints by a guarded read-modify-write (see
`installer.stacks.taints` for why not SSA).

Which nodes belong to a pool is decided before the program runs (`installer.stacks.nodeplan`),
against the live cluster: the program only sees node names, so previews are deterministic.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pydantic import Field

from installer.stacks.common import StackArgs, StackModel, load_args
from installer.stacks.nodemarks import NodeMarks


class TaintSpec(StackModel):
    """One taint the installer sets."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


class NodeAssignment(StackModel):
    """One node, its pool, and what the installer sets on it."""

    node: str = Field(description="Node name.")
    pool: str = Field(description="Pool the node belongs to.")
    labels: dict[str, str] = Field(description="Labels the installer owns on the node.")
    taints: list[TaintSpec] = Field(description="Taints the installer owns on the node.")


class NodesArgs(StackArgs):
    """Arguments of the nodes stack."""

    nodes: list[NodeAssignment] = Field(description="Every pool node, sorted by name.")


LEGACY_RESOURCES = {
    "kubernetes:core/v1:NodePatch": "labels-",
    "pulumi-python:dynamic:Resource": "taints-",
}
"""Before `node-marks`, the stack held two resources per node (type: name prefix)."""


def legacy_urns(resources: list[dict[str, Any]]) -> list[str]:
    """The per-node resources an older installer left in the nodes stack's state.

    The engine forgets them before a run: their marks stay on the nodes, where `node-marks` takes
    them over (the same field manager owns the labels; the taints' owner record is on each node).
    Deleting them the usual way would take back what `node-marks` had just set."""
    return [
        str(r["urn"])
        for r in resources
        if (prefix := LEGACY_RESOURCES.get(str(r.get("type"))))
        and str(r.get("urn", "")).rsplit("::", 1)[-1].startswith(prefix)
    ]


class NodePools(pulumi.ComponentResource):
    """Labels and taints of every pool node of one cluster."""

    def __init__(
        self, name: str, args: NodesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onprem:nodes:NodePools", name, None, opts)
        self.marks = NodeMarks(
            "node-marks",
            nodes={
                item.node: {
                    "pool": item.pool,
                    "labels": dict(item.labels),
                    "taints": [t.model_dump() for t in item.taints],
                }
                for item in args.nodes
            },
            kubeconfig=args.kube.kubeconfig,
            context=args.kube.context,
            opts=pulumi.ResourceOptions(parent=self),
        )
        pools: dict[str, list[str]] = {}
        for item in args.nodes:
            pools.setdefault(item.pool, []).append(item.node)
        self.pools = pools
        self.register_outputs({"pools": pools})


def program() -> None:
    """The Pulumi program of `stacks/nodes`."""
    args = load_args(NodesArgs)
    component = NodePools(args.cluster, args)
    pulumi.export("pools", component.pools)
