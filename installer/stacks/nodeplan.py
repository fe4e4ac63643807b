"""Which live node belongs to which pool, checked against what the inventory claims.

Runs before the nodes program (in the engine, at plan time), so a preview never depends on the
cluster changing under it: the program gets node names only. Every contradiction is a
BadInputError naming the node and the pool.
"""

from __future__ import annotations

from decimal import Decimal

from installer.engines.kube import NodeInfo
from installer.errors import BadInputError
from installer.inventory.models import Cluster, NodePool
from installer.inventory.types import format_bytes, parse_quantity
from installer.site import gpu_label_problems, gpu_resource_problems, pool_labels, pool_taints
from installer.stacks.nodes import NodeAssignment, TaintSpec


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def pool_members(cluster: Cluster, pool: NodePool, live: dict[str, NodeInfo]) -> list[NodeInfo]:
    """The live nodes of `pool`: its named nodes (each must exist) or its selector's matches."""
    where = f"cluster {cluster.name}, pool {pool.name}"
    if pool.nodes is not None:
        missing = [name for name in pool.nodes if name not in live]
        if missing:
            raise BadInputError(
                f"{where}: node {', '.join(missing)} does not exist in the cluster",
                remedy="fix the node names in the pool or join the nodes first"
                " (`kubectl get nodes`)",
            )
        return [live[name] for name in pool.nodes]
    selector = pool.selector or {}
    found = [n for n in live.values() if all(n.labels.get(k) == v for k, v in selector.items())]
    if not found:
        raise BadInputError(
            f"{where}: selector {_selector_text(selector)} matches no node",
            remedy="check the labels with `kubectl get nodes --show-labels`",
        )
    return sorted(found, key=lambda n: n.name)


def _show(resource: str, amount: Decimal) -> str:
    return f"{float(amount):g}" if resource == "cpu" else format_bytes(int(amount))


def check_node(cluster: Cluster, pool: NodePool, node: NodeInfo) -> list[str]:
    """Contradictions between what the pool claims and what the node reports."""
    why: list[str] = []
    if pool.gpu is not None:
        why += gpu_label_problems(pool.gpu, node.labels)
        why += gpu_resource_problems(pool.gpu, node.allocatable)
    for resource, claimed in (("cpu", pool.cpu), ("memory", pool.memory)):
        have_text = node.allocatable.get(resource)
        if have_text is None:
            continue
        have = parse_quantity(have_text)
        want = parse_quantity(claimed)
        if have < want:
            why.append(
                f"allocatable {resource} is {_show(resource, have)}, less than the pool's"
                f" {_show(resource, want)} (presets sized for the pool would never fit)"
            )
    return why


def plan_nodes(cluster: Cluster, live_nodes: list[NodeInfo]) -> list[NodeAssignment]:
    """Every pool node with the labels and taints the installer sets on it, sorted by name."""
    live = {n.name: n for n in live_nodes}
    owner: dict[str, str] = {}
    problems: list[str] = []
    out: list[NodeAssignment] = []
    for pool in cluster.node_pools:
        labels = pool_labels(pool)
        taints = [TaintSpec(key=t.key, value=t.value, effect=t.effect) for t in pool_taints(pool)]
        for node in pool_members(cluster, pool, live):
            if node.name in owner:
                problems.append(
                    f"node {node.name} is in pool {owner[node.name]} and in pool {pool.name};"
                    " a node belongs to one pool"
                )
                continue
            owner[node.name] = pool.name
            for why in check_node(cluster, pool, node):
                problems.append(f"node {node.name} (pool {pool.name}): {why}")
            out.append(NodeAssignment(node=node.name, pool=pool.name, labels=labels, taints=taints))
    if problems:
        raise BadInputError(
            f"cluster {cluster.name}: the inventory contradicts the live nodes:\n  "
            + "\n  ".join(problems),
            remedy="fix the pools in the inventory (or the nodes' GPU setup) and re-run",
        )
    return sorted(out, key=lambda a: a.node)
