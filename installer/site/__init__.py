"""The derived view of a site that the phases read: labels, taints, tolerations, names, URLs.

Everything here is computed from the inventory; nothing is stored. The label and taint keys are
the platform's (see docs/inventory.md), so the job controller, the nodes stack and the acceptance
checks all agree on one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from installer.inventory.models import (
    GPU_RESOURCE,
    Cluster,
    Inventory,
    NodePool,
    PoolGpu,
    Preset,
)
from installer.inventory.types import format_bytes, parse_quantity

# Label and taint keys of the platform.
POOL_LABEL = "platform.apolo.us/node-pool"
POOL_LABEL_LEGACY = "platform.neuromation.io/nodepool"
JOB_LABEL = "platform.neuromation.io/job"
JOB_TAINT = "platform.neuromation.io/job"
ACCELERATOR_LABEL = "platform.neuromation.io/accelerator"
PREEMPTIBLE_LABEL = "platform.neuromation.io/preemptible"
PREEMPTIBLE_TAINT = "platform.neuromation.io/preemptible"
ROLE_LABEL = "platform.apolo.us/role"
GPU_TAINTS = dict(GPU_RESOURCE)
GPU_RESOURCES = GPU_RESOURCE
# What NVIDIA's GPU feature discovery labels a node with.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"


def gpu_product_matches(gpu: PoolGpu, product: str) -> bool:
    """Whether a node's `nvidia.com/gpu.product` is the pool's model: with MIG's single strategy
    feature discovery appends the slices' profile (`NVIDIA-A100-SXM4-80GB-MIG-1g.10gb`)."""
    if gpu.mig_profiles and gpu.mig_strategy == "single":
        return product in {gpu.model, *(f"{gpu.model}-MIG-{p}" for p in gpu.mig_profiles)}
    return product == gpu.model


def gpu_label_problems(gpu: PoolGpu, labels: Mapping[str, str]) -> list[str]:
    """Where feature discovery's labels on a node contradict the pool (labels absent: nothing)."""
    if gpu.vendor != "nvidia":
        return []
    why = []
    product = labels.get(GPU_PRODUCT_LABEL)
    if product is not None and not gpu_product_matches(gpu, product):
        why.append(f"{GPU_PRODUCT_LABEL} is {product}, the pool says {gpu.model}")
    count = labels.get(GPU_COUNT_LABEL)
    # With the single strategy the count is the node's slices; else its physical GPUs.
    want = gpu.slices if gpu.mig_profiles and gpu.mig_strategy == "single" else gpu.count
    if count is not None and count != str(want):
        why.append(f"{GPU_COUNT_LABEL} is {count}, the pool says {want}")
    strategy = labels.get(MIG_STRATEGY_LABEL)
    if gpu.mig_profiles and strategy not in (None, "none", gpu.mig_strategy):
        why.append(f"{MIG_STRATEGY_LABEL} is {strategy}, the pool says {gpu.mig_strategy}")
    return why


def gpu_resource_problems(
    gpu: PoolGpu, allocatable: Mapping[str, str], *, exact: bool = False
) -> list[str]:
    """Where a node's allocatable GPU resources contradict the pool (`PoolGpu.allocatable`):
    a resource missing (no device plugin, or another MIG strategy), or fewer (`exact`: other)
    than the pool says."""
    why = []
    for resource, want in gpu.allocatable().items():
        have = allocatable.get(resource)
        if have is None:
            hint = (
                f"is the device plugin running with mig.strategy={gpu.mig_strategy}?"
                if gpu.mig_profiles
                else "is the device plugin running?"
            )
            why.append(f"it has no allocatable {resource} ({hint})")
        elif (parse_quantity(have) != want) if exact else (parse_quantity(have) < want):
            why.append(f"allocatable {resource} is {have}, the pool says {want}")
    return why


@dataclass(frozen=True, order=True)
class NodeTaint:
    """A taint the installer owns on a node."""

    key: str
    value: str
    effect: str


@dataclass(frozen=True, order=True)
class Toleration:
    """A toleration (operator Exists) a job pod carries."""

    key: str
    effect: str = "NoSchedule"


def pool_labels(pool: NodePool) -> dict[str, str]:
    """Labels the installer sets on every node of `pool`."""
    labels = {POOL_LABEL: pool.name, POOL_LABEL_LEGACY: pool.name}
    if pool.jobs:
        labels[JOB_LABEL] = "true"
        labels[ROLE_LABEL] = "workload"
    if pool.gpu is not None:
        labels[ACCELERATOR_LABEL] = pool.gpu.model
    if pool.preemptible:
        labels[PREEMPTIBLE_LABEL] = "true"
    labels.update(pool.labels)
    return labels


def pool_taints(pool: NodePool) -> list[NodeTaint]:
    """Taints the installer sets on every node of `pool`, sorted."""
    taints = {NodeTaint(t.key, t.value, t.effect) for t in pool.taints}
    if pool.jobs:
        taints.add(NodeTaint(JOB_TAINT, "true", "NoSchedule"))
    if pool.preemptible:
        taints.add(NodeTaint(PREEMPTIBLE_TAINT, "true", "NoSchedule"))
    if pool.gpu is not None:
        taints.add(NodeTaint(GPU_TAINTS[pool.gpu.vendor], "present", "NoSchedule"))
    return sorted(taints)


def preset_tolerations(preset: Preset, cluster: Cluster) -> list[Toleration]:
    """Tolerations the job controller gives a pod of `preset` (the platform's contract)."""
    pools = [p for p in cluster.node_pools if p.name in preset.pools]
    keys = {JOB_TAINT}
    for vendor in ("nvidia", "amd", "intel"):
        if getattr(preset, f"{vendor}_gpu") is not None or (
            vendor == "nvidia" and preset.nvidia_migs
        ):
            keys.add(GPU_TAINTS[vendor])
    for pool in pools:
        if pool.gpu is not None:
            keys.add(GPU_TAINTS[pool.gpu.vendor])
        if pool.preemptible:
            keys.add(PREEMPTIBLE_TAINT)
    if preset.preemptible:
        keys.add(PREEMPTIBLE_TAINT)
    return [Toleration(k) for k in sorted(keys)]


def preset_resources(preset: Preset) -> dict[str, str]:
    """Requests (equal to limits) of a pod of `preset`, as Kubernetes quantities."""
    res = {"cpu": f"{round(preset.cpu * 1000)}m", "memory": format_bytes(preset.memory)}
    for vendor, resource in GPU_RESOURCES.items():
        gpu = getattr(preset, f"{vendor}_gpu")
        if gpu is not None:
            res[resource] = str(gpu.count)
    for profile, mig in preset.nvidia_migs.items():
        res[f"nvidia.com/mig-{profile}"] = str(mig.count)
    return res


@dataclass(frozen=True)
class ClusterNames:
    """The DNS names of one cluster."""

    domain: str
    records: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> str:
        """Wildcard for job URLs."""
        return f"*.jobs.{self.domain}"

    @property
    def apps(self) -> str:
        """Wildcard for app URLs."""
        return f"*.apps.{self.domain}"


def cluster_names(inv: Inventory, cluster: Cluster) -> ClusterNames:
    """DNS names the cluster needs, all pointing at its ingress IPs."""
    domain = cluster.domain or f"{cluster.name}.org.{inv.site.domain}"
    records = [domain, f"*.{domain}", f"*.jobs.{domain}", f"*.apps.{domain}"]
    return ClusterNames(domain=domain, records=records)


def hub_hostname(inv: Inventory) -> str:
    """The VM's DNS name."""
    return inv.aux_vm.hostname or f"hub.{inv.site.domain}"


@dataclass(frozen=True)
class HubUrls:
    """Where the artifact hub's services answer."""

    registry: str
    """The registry's read-only endpoint (`host:port`): what nodes pull from, with the pull
    login."""
    registry_push: str
    """The registry's read-write endpoint: the installer's pushes and deletes."""
    charts: str
    """ChartMuseum's read-only endpoint, for chart reads with the pull login."""
    charts_push: str
    """ChartMuseum's endpoint with its API: the installer's uploads."""
    pypi: str


def hub_urls(inv: Inventory) -> HubUrls:
    """Service URLs of the VM (TLS always)."""
    host = hub_hostname(inv)
    svc = inv.aux_vm.services
    return HubUrls(
        registry=f"{host}:{svc.registry.port}",
        registry_push=f"{host}:{svc.registry.push_port}",
        charts=f"https://{host}:{svc.chartmuseum.port}",
        charts_push=f"https://{host}:{svc.chartmuseum.push_port}",
        pypi=f"https://{host}:{svc.devpi.port}/root/platform/+simple/",
    )


def normalize_image(ref: str) -> str:
    """Fully qualify an image reference the way Docker does (`busybox` ->
    `docker.io/library/busybox`)."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def site_image(inv: Inventory, ref: str) -> str:
    """An upstream image reference rewritten to the site registry, keeping its full path.

    >>> # ghcr.io/neuro-inc/platformapi:1 -> hub.ml.example.com:5000/ghcr.io/neuro-inc/platformapi:1
    """
    return f"{hub_urls(inv).registry}/{normalize_image(ref)}"


def dns_zones(inv: Inventory) -> list[dict[str, Any]]:
    """The wildcard zones the VM's dnsmasq answers, from `cluster_names` (one source of truth).

    dnsmasq's `address=/<zone>/<ip>` answers the zone and every name under it, so each record
    (`<domain>`, `*.<domain>`, `*.jobs.<domain>`, `*.apps.<domain>`) becomes its zone; records
    sharing a zone (`<domain>` and `*.<domain>`) share one entry.
    """
    zones: dict[str, dict[str, Any]] = {}
    for cluster in inv.clusters:
        addresses = [str(ip) for ip in cluster.ingress_ips]
        for record in cluster_names(inv, cluster).records:
            zone = record.removeprefix("*.")
            entry = zones.setdefault(zone, {"zone": zone, "records": [], "addresses": addresses})
            entry["records"].append(record)
    return list(zones.values())


MIRRORED_ALWAYS = ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io")
"""Registries every node mirrors to the hub, whatever the release names: images a chart or an
operator injects at run time come from these."""

_SERVERS = {"docker.io": "https://registry-1.docker.io"}
"""Where a registry's API really answers, where that is not `https://<name>`."""


@dataclass(frozen=True)
class MirroredRegistry:
    """An upstream registry whose images the nodes pull from the hub under their own names."""

    name: str
    """As image references name it (`docker.io`, `ghcr.io`, `registry.example.com:5000`)."""
    server: str
    """Its own API (containerd's `server`: the fallback, unreachable on an air-gapped site)."""


def mirrored_registries(image_names: list[str]) -> list[MirroredRegistry]:
    """The registries the nodes mirror to the hub: `MIRRORED_ALWAYS` and every registry the
    given image names (a release's) pull from, sorted by name."""
    names = set(MIRRORED_ALWAYS) | {normalize_image(n).split("/", 1)[0] for n in image_names}
    return [MirroredRegistry(n, _SERVERS.get(n, f"https://{n}")) for n in sorted(names)]


def runtime_configured(cluster: Cluster) -> bool:
    """Whether the nodes phase configures `cluster`'s containerd over SSH
    (`node_runtime.configure`: `ssh`, or `auto` with `node_ssh` given)."""
    mode = cluster.node_runtime.configure
    return mode == "ssh" or (mode == "auto" and cluster.node_ssh is not None)
