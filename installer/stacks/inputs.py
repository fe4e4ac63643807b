"""From the inventory (and, for nodes, the live cluster) to each stack's typed arguments."""

from __future__ import annotations

from collections.abc import Callable

from installer.inventory.models import Cluster, Inventory
from installer.release import ReleaseManifest, load_release
from installer.site import cluster_names, hub_urls
from installer.stacks import ComponentName, StackInput
from installer.stacks.common import KubeTarget
from installer.stacks.livecluster import LiveNode, read_nodes
from installer.stacks.nodeplan import plan_nodes
from installer.stacks.nodes import NodesArgs
from installer.stacks.platform import (
    OIDC_SECRET_KEY,
    REGISTRY_PASSWORD_KEY,
    Oidc,
    PlatformArgs,
)
from installer.stacks.platformconfig import (
    controller_config,
    controller_env,
    controller_images,
    oidc_issuer,
)
from installer.state import HUB_USER, StateDir

HUB_PASSWORD_SECRET = "hub-password"  # noqa: S105 - a state-folder name (airgap-load uses it)

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


def platform_input(
    inv: Inventory,
    cluster: Cluster,
    state: StateDir,
    read: NodeReader = read_nodes,
    release: ReleaseManifest | None = None,
) -> StackInput:
    """The platform stack: controllers' config (pool sizes from the live nodes), images, secrets."""
    target = kube_target(cluster)
    members = plan_nodes(cluster, read(target))
    sizes: dict[str, int] = {}
    for item in members:
        sizes[item.pool] = sizes.get(item.pool, 0) + 1
    args = PlatformArgs(
        cluster=cluster.name,
        kube=target,
        namespace=cluster.platform.namespace,
        jobs_namespace=cluster.platform.jobs_namespace,
        apps_namespace=cluster.platform.apps_namespace,
        registry=hub_urls(inv).registry,
        registry_user=HUB_USER,
        images=controller_images(inv, release or load_release()),
        domain=cluster_names(inv, cluster).domain,
        config=controller_config(inv, cluster, sizes),
        env=controller_env(cluster),
        oidc=Oidc(issuer=oidc_issuer(inv, cluster), client_id=cluster.keycloak.client_id),
    )
    secrets = {
        REGISTRY_PASSWORD_KEY: state.secret(HUB_PASSWORD_SECRET),
        OIDC_SECRET_KEY: state.secret(oidc_client_secret_name(cluster)),
    }
    return StackInput(component="platform", args=args, secrets=secrets)


def oidc_client_secret_name(cluster: Cluster) -> str:
    """State-folder name of the platform client's secret (the keycloak step sets it there)."""
    return f"keycloak-client-{cluster.name}"


Builder = Callable[[Inventory, Cluster, StateDir], StackInput]


def builders() -> dict[ComponentName, Builder]:
    """The input builder of every component that exists."""
    out: dict[ComponentName, Builder] = {"nodes": nodes_input, "platform": platform_input}
    return out


def stack_input(
    component: ComponentName, inv: Inventory, cluster: Cluster, state: StateDir
) -> StackInput:
    """The stack input of one component for one cluster."""
    return builders()[component](inv, cluster, state)
