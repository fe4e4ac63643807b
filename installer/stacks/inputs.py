"""From the inventory (and, for nodes, the live cluster) to each stack's typed arguments."""

from __future__ import annotations

from collections.abc import Callable

from installer.inventory.models import Cluster, Inventory
from installer.stacks import ComponentName, StackInput
from installer.stacks.common import KubeTarget
from installer.stacks.livecluster import LiveNode, read_nodes
from installer.stacks.nodeplan import plan_nodes
from installer.stacks.nodes import NodesArgs
from installer.state import StateDir

NodeReader = Callable[[KubeTarget], list[LiveNode]]


def kube_target(cluster: Cluster) -> KubeTarget:
    """The cluster's API as the stacks see it (absolute kubeconfig path)."""
    return KubeTarget(kubeconfig=str(cluster.kubeconfig.resolve()), context=cluster.context)


def nodes_input(
    inv: Inventory, cluster: Cluster, state: StateDir, read: NodeReader = read_nodes
) -> StackInput:
    """The nodes stack: pools resolved against the live nodes (selectors, names, GPU facts)."""
    target = kube_target(cluster)
    args = NodesArgs(cluster=cluster.name, kube=target, nodes=plan_nodes(cluster, read(target)))
    return StackInput(component="nodes", args=args)


Builder = Callable[[Inventory, Cluster, StateDir], StackInput]


def builders() -> dict[ComponentName, Builder]:
    """The input builder of every component that exists."""
    out: dict[ComponentName, Builder] = {"nodes": nodes_input}
    return out


def stack_input(
    component: ComponentName, inv: Inventory, cluster: Cluster, state: StateDir
) -> StackInput:
    """The stack input of one component for one cluster."""
    return builders()[component](inv, cluster, state)
