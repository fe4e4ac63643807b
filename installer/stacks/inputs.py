"""From the inventory (and, for nodes, the live cluster) to each stack's typed arguments."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from installer.engines.kube import NodeInfo, read_nodes
from installer.errors import BadInputError
from installer.inventory.models import Cluster, Inventory, Storage
from installer.release import ReleaseManifest, load_release
from installer.site import GPU_TAINTS, JOB_TAINT, PREEMPTIBLE_TAINT, cluster_names, hub_urls
from installer.stacks import ComponentName, StackInput
from installer.stacks.common import KubeTarget
from installer.stacks.dns import DnsArgs, DnsRecord
from installer.stacks.keycloak import (
    ADMIN_PASSWORD_KEY,
    CLIENT_SECRET_KEY,
    DB_PASSWORD_KEY,
    IDP_SECRET_KEY,
    InClusterKeycloak,
    KeycloakArgs,
)
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
from installer.stacks.storage import CHART_PASSWORD_KEY, ChartSource, StorageArgs, StorageClassSpec
from installer.stacks.storage_cstor import (
    CSTOR_PROVISIONER,
    CStorDisk,
    CStorPools,
    cstor_values,
)
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir

NodeReader = Callable[[KubeTarget], list[NodeInfo]]


def live_nodes(target: KubeTarget) -> list[NodeInfo]:
    """The cluster's nodes as its kubeconfig (and context) sees them."""
    return read_nodes(Path(target.kubeconfig), target.context)


def kube_target(cluster: Cluster) -> KubeTarget:
    """The cluster's API as the stacks see it (absolute kubeconfig path)."""
    return KubeTarget(kubeconfig=str(cluster.kubeconfig.resolve()), context=cluster.context)


def nodes_input(
    inv: Inventory, cluster: Cluster, state: StateDir, read: NodeReader = live_nodes
) -> StackInput:
    """The nodes stack: pools resolved against the live nodes (selectors, names, GPU facts)."""
    target = kube_target(cluster)
    args = NodesArgs(cluster=cluster.name, kube=target, nodes=plan_nodes(cluster, read(target)))
    return StackInput(component="nodes", args=args)


def platform_input(
    inv: Inventory,
    cluster: Cluster,
    state: StateDir,
    read: NodeReader = live_nodes,
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
        registry_user=HUB_PULL_USER,
        images=controller_images(inv, release or load_release()),
        domain=cluster_names(inv, cluster).domain,
        config=controller_config(inv, cluster, sizes),
        env=controller_env(cluster),
        oidc=Oidc(issuer=oidc_issuer(inv, cluster), client_id=cluster.keycloak.client_id),
    )
    secrets = {
        REGISTRY_PASSWORD_KEY: state.secret(HUB_PULL_PASSWORD_SECRET),
        OIDC_SECRET_KEY: state.secret(oidc_client_secret_name(cluster)),
    }
    return StackInput(component="platform", args=args, secrets=secrets)


LVM_VOLUME_GROUP = "openebs-vg"
"""Volume group the nodes playbook creates on the inventory's raw disks for LocalPV-LVM."""


def storage_tolerations() -> list[dict[str, str]]:
    """Storage runs on every node, job and GPU nodes included: the installer's taints."""
    keys = sorted({JOB_TAINT, PREEMPTIBLE_TAINT, *GPU_TAINTS.values()})
    return [{"key": k, "operator": "Exists", "effect": "NoSchedule"} for k in keys]


def openebs_values(inv: Inventory, storage: Storage) -> dict[str, Any]:
    """Values of the openebs chart (4.x keys) for the inventory's engine, images from the site
    registry (each keeps its upstream path: `<hub>/docker.io/openebs/...`)."""
    hub = hub_urls(inv).registry

    def image(upstream: str) -> dict[str, str]:
        return {"registry": f"{hub}/{upstream}/"}

    tolerations = storage_tolerations()
    return {
        "engines": {
            "local": {
                "lvm": {"enabled": storage.engine == "localpv-lvm"},
                "zfs": {"enabled": False},
            },
            "replicated": {"mayastor": {"enabled": False}},
        },
        "localpv-provisioner": {
            "localpv": {
                "basePath": storage.hostpath_dir,
                "image": image("docker.io"),
                "tolerations": tolerations,
            },
            "helperPod": {"image": image("docker.io")},
            # The stack owns the classes (names and the default follow the inventory).
            "hostpathClass": {"enabled": False},
        },
        "lvm-localpv": {
            "lvmController": {"provisioner": {"image": image("registry.k8s.io")}},
            "lvmNode": {
                "driverRegistrar": {"image": image("registry.k8s.io")},
                "tolerations": tolerations,
            },
            "lvmPlugin": {"image": image("docker.io")},
        },
        "openebs-crds": {"csi": {"volumeSnapshots": {"enabled": False}}},
        "loki": {"enabled": False},
        "alloy": {"enabled": False},
    }


def storage_classes(storage: Storage) -> list[StorageClassSpec]:
    """The inventory's default StorageClass for its engine."""
    if storage.engine == "localpv-hostpath":
        config = (
            "- name: StorageType\n  value: hostpath\n"
            f"- name: BasePath\n  value: {storage.hostpath_dir}\n"
        )
        return [
            StorageClassSpec(
                name=storage.default_class,
                provisioner="openebs.io/local",
                annotations={"openebs.io/cas-type": "local", "cas.openebs.io/config": config},
                default=True,
            )
        ]
    if storage.engine == "localpv-lvm":
        return [
            StorageClassSpec(
                name=storage.default_class,
                provisioner="local.csi.openebs.io",
                parameters={"storage": "lvm", "volgroup": LVM_VOLUME_GROUP, "fsType": "ext4"},
                default=True,
            )
        ]
    return [
        StorageClassSpec(
            name=storage.default_class,
            provisioner=CSTOR_PROVISIONER,
            parameters={
                "cas-type": "cstor",
                "cstorPoolCluster": storage.default_class,
                "replicaCount": str(storage.replicas),
            },
            default=True,
            # Pools are reached over iSCSI from any node: bind at once.
            binding_mode="Immediate",
        )
    ]


NDM_DISCOVERY_ENV = "INSTALLER_NDM_DISCOVERY_S"
"""How long the storage stack waits for NDM to report the inventory's disks (seconds)."""


def cstor_pools(storage: Storage, tolerations: list[dict[str, str]]) -> CStorPools:
    """The pool cluster of the inventory's disks; exit 2 when `replicas` exceeds the pools
    (cStor puts each replica of a volume on another pool, one pool per node with disks)."""
    nodes = list(dict.fromkeys(d.node for d in storage.disks))
    if storage.replicas > len(nodes):
        raise BadInputError(
            f"storage.replicas is {storage.replicas} but storage.disks has disks on"
            f" {len(nodes)} node(s) ({', '.join(nodes) or 'none'}): cStor keeps each replica of a"
            " volume on a pool of its own, one pool per node",
            remedy=f"list disks on at least {storage.replicas} nodes, or lower storage.replicas",
        )
    raw_wait = os.environ.get(NDM_DISCOVERY_ENV, "")
    if raw_wait and not raw_wait.isdigit():
        raise BadInputError(f"{NDM_DISCOVERY_ENV} must be a number of seconds, not {raw_wait!r}")
    return CStorPools(
        name=storage.default_class,
        disks=[CStorDisk(node=d.node, device=d.device) for d in storage.disks],
        tolerations=tolerations,
        **({"discovery_s": int(raw_wait)} if raw_wait else {}),
    )


def storage_input(
    inv: Inventory, cluster: Cluster, state: StateDir, release: ReleaseManifest | None = None
) -> StackInput:
    """The storage stack: the openebs chart from the site ChartMuseum and the classes."""
    manifest = release or load_release()
    storage = cluster.storage
    # cStor left the openebs umbrella chart in 4.x; it has a chart of its own.
    chart_name = "cstor" if storage.engine == "cstor" else "openebs"
    chart = next((c for c in manifest.charts if c.name == chart_name), None)
    if chart is None:
        raise BadInputError(f"the release manifest has no {chart_name} chart")
    classes = storage_classes(storage)
    pools = None
    if storage.engine == "cstor":
        pools = cstor_pools(storage, storage_tolerations())
        values = cstor_values(hub_urls(inv).registry, storage_tolerations())
    else:
        values = openebs_values(inv, storage)
    args = StorageArgs(
        cluster=cluster.name,
        kube=kube_target(cluster),
        engine=storage.engine,
        release=chart_name,
        source=ChartSource(
            repo=hub_urls(inv).charts,
            chart=chart.name,
            version=chart.version,
            username=HUB_PULL_USER,
            ca_file=str(state.ca_cert.resolve()),
        ),
        values=values,
        classes=classes,
        cstor=pools,
    )
    return StackInput(
        component="storage",
        args=args,
        secrets={CHART_PASSWORD_KEY: state.secret(HUB_PULL_PASSWORD_SECRET)},
    )


def dns_input(inv: Inventory, cluster: Cluster, state: StateDir) -> StackInput:
    """The dns stack: every name of the cluster's zone on its ingress IPs."""
    names = cluster_names(inv, cluster)
    ips = [str(ip) for ip in cluster.ingress_ips]
    args = DnsArgs(
        cluster=cluster.name,
        kube=kube_target(cluster),
        domain=names.domain,
        ingress_ips=ips,
        records=[DnsRecord(name=name, addresses=ips) for name in names.records],
        vm_serves_dns=inv.aux_vm.dns.enabled,
    )
    return StackInput(component="dns", args=args)


CLI_CALLBACK = "http://localhost:54540/*"
"""Where the platform's CLI receives the login redirect."""


def keycloak_input(
    inv: Inventory, cluster: Cluster, state: StateDir, release: ReleaseManifest | None = None
) -> StackInput:
    """The keycloak stack: the chart (in-cluster) and the realm, client and identity provider."""
    kc = cluster.keycloak
    domain = cluster_names(inv, cluster).domain
    secrets = {CLIENT_SECRET_KEY: state.secret(oidc_client_secret_name(cluster))}
    in_cluster = None
    if kc.mode == "external":
        assert kc.url is not None and kc.admin_password is not None  # the inventory rules
        url = kc.url
        secrets[ADMIN_PASSWORD_KEY] = kc.admin_password.resolve()
    else:
        hostname = f"keycloak.{domain}"
        # The chart's ingress serves the hostname; an inventory URL says how the installer's
        # machine reaches the admin API when that name does not lead there from where it runs.
        url = kc.url or f"https://{hostname}"
        secrets[ADMIN_PASSWORD_KEY] = (
            kc.admin_password.resolve()
            if kc.admin_password
            else state.secret(f"keycloak-admin-{cluster.name}")
        )
        secrets[DB_PASSWORD_KEY] = state.secret(f"keycloak-db-{cluster.name}")
        secrets[CHART_PASSWORD_KEY] = state.secret(HUB_PULL_PASSWORD_SECRET)
        manifest = release or load_release()
        chart = next((c for c in manifest.charts if c.name == "keycloak"), None)
        if chart is None:
            raise BadInputError("the release manifest has no keycloak chart")
        in_cluster = InClusterKeycloak(
            source=ChartSource(
                repo=hub_urls(inv).charts,
                chart=chart.name,
                version=chart.version,
                username=HUB_PULL_USER,
                ca_file=str(state.ca_cert.resolve()),
            ),
            hostname=hostname,
            values={
                "auth": {"adminUser": kc.admin_user},
                # Images resolve through the site registry, keeping their upstream path.
                "global": {"imageRegistry": f"{hub_urls(inv).registry}/docker.io"},
                "proxyHeaders": "xforwarded",
                "ingress": {"enabled": True, "hostname": hostname, "tls": True},
                "postgresql": {"enabled": True},
            },
        )
    idp = kc.identity_provider
    idp_dict = None
    if idp is not None:
        idp_dict = {"alias": idp.alias, "type": idp.type, "client_id": idp.client_id}
        if idp.client_secret is not None:
            secrets[IDP_SECRET_KEY] = idp.client_secret.resolve()
    args = KeycloakArgs(
        cluster=cluster.name,
        kube=kube_target(cluster),
        mode=kc.mode,
        url=url,
        # An external Keycloak's CA comes from the inventory; an in-cluster one uses the site CA.
        ca_file=str(kc.ca_cert.resolve())
        if kc.ca_cert is not None
        else (str(state.ca_cert.resolve()) if state.ca_cert.is_file() else None),
        admin_user=kc.admin_user,
        realm=kc.realm,
        client_id=kc.client_id,
        redirect_uris=[f"https://{domain}/*", CLI_CALLBACK],
        web_origins=[f"https://{domain}"],
        identity_provider=idp_dict,
        idp_from_url=(idp.discovery_url or idp.metadata_url) if idp else None,
        in_cluster=in_cluster,
    )
    return StackInput(component="keycloak", args=args, secrets=secrets)


def oidc_client_secret_name(cluster: Cluster) -> str:
    """State-folder name of the platform client's secret (the keycloak step sets it there)."""
    return f"keycloak-client-{cluster.name}"


Builder = Callable[[Inventory, Cluster, StateDir], StackInput]


def builders() -> dict[ComponentName, Builder]:
    """The input builder of every component that exists."""
    out: dict[ComponentName, Builder] = {
        "nodes": nodes_input,
        "storage": storage_input,
        "dns": dns_input,
        "keycloak": keycloak_input,
        "platform": platform_input,
    }
    return out


class NodeMemo:
    """A node reader that reads each cluster's nodes once per run (`PhaseContext.facts`): the
    plan, the phases' inputs hashes and their runs resolve pools against one listing."""

    def __init__(self, read: NodeReader | None = None) -> None:
        self._read = read if read is not None else live_nodes
        self._seen: dict[tuple[str, str | None], list[NodeInfo]] = {}

    def __call__(self, target: KubeTarget) -> list[NodeInfo]:
        key = (target.kubeconfig, target.context)
        if key not in self._seen:
            self._seen[key] = self._read(target)
        return self._seen[key]


def stack_input(
    component: ComponentName,
    inv: Inventory,
    cluster: Cluster,
    state: StateDir,
    read: NodeReader | None = None,
) -> StackInput:
    """The stack input of one component for one cluster (`read`: how the live nodes are read,
    for the components that need them)."""
    if read is not None and component == "nodes":
        return nodes_input(inv, cluster, state, read=read)
    if read is not None and component == "platform":
        return platform_input(inv, cluster, state, read=read)
    return builders()[component](inv, cluster, state)
