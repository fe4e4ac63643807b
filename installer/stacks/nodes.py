"""The nodes stack: each pool's nodes carry the platform's labels and taints.

Labels go through `NodePatch` (server-side apply, field manager `onprem-installer`, forced, so the
installer is authoritative for the keys it sets; a label map is owned per key, so other labels
are never touched and deleting the patch removes exactly the installer's keys). Taints go through
`NodeTaints` (see `installer.stacks.taints` for why not SSA).

Which nodes belong to a pool is decided before the program runs (`installer.stacks.nodeplan`),
against the live cluster: the program only sees node names, so previews are deterministic.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from installer.stacks.common import (
    FIELD_MANAGER,
    StackArgs,
    StackModel,
    kube_provider,
    load_args,
)
from installer.stacks.taints import NodeTaints


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


PATCH_ANNOTATIONS = {
    "pulumi.com/patchFieldManager": FIELD_MANAGER,
    # The installer is authoritative for the platform's keys: a value someone set by hand is
    # taken over (and removed again when the pool goes away).
    "pulumi.com/patchForce": "true",
}


class NodePools(pulumi.ComponentResource):
    """Labels and taints of every pool node of one cluster."""

    def __init__(
        self, name: str, args: NodesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onprem:nodes:NodePools", name, None, opts)
        provider = kube_provider(f"{name}-kube", args.kube, self)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        self.labels: dict[str, k8s.core.v1.NodePatch] = {}
        self.taints: dict[str, NodeTaints] = {}
        for item in args.nodes:
            self.labels[item.node] = k8s.core.v1.NodePatch(
                f"labels-{item.node}",
                metadata=k8s.meta.v1.ObjectMetaPatchArgs(
                    name=item.node, labels=dict(item.labels), annotations=dict(PATCH_ANNOTATIONS)
                ),
                opts=child,
            )
            if item.taints:
                self.taints[item.node] = NodeTaints(
                    f"taints-{item.node}",
                    node=item.node,
                    taints=[t.model_dump() for t in item.taints],
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
