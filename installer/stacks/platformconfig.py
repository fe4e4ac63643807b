"""The controllers' configuration in the platform's wire format, derived from the inventory."""

from __future__ import annotations

from typing import Any

from installer.errors import BadInputError
from installer.inventory.models import Cluster, Inventory, NodePool, Preset, PresetGpu
from installer.release import ReleaseManifest
from installer.site import (
    ACCELERATOR_LABEL,
    GPU_TAINTS,
    JOB_LABEL,
    JOB_TAINT,
    POOL_LABEL,
    POOL_LABEL_LEGACY,
    PREEMPTIBLE_LABEL,
    PREEMPTIBLE_TAINT,
    ROLE_LABEL,
    cluster_names,
    site_image,
)

# The job controller is the platform's poller, which runs from the platform API image.
JOB_CONTROLLER_IMAGE = "ghcr.io/neuro-inc/platformapi"
APP_CONTROLLER_IMAGE = "ghcr.io/neuro-inc/platform-apps"


def _gpu(gpu: PresetGpu | None) -> dict[str, Any] | None:
    if gpu is None:
        return None
    out: dict[str, Any] = {"count": gpu.count}
    if gpu.model is not None:
        out["model"] = gpu.model
    if gpu.memory is not None:
        out["memory"] = gpu.memory
    return out


def preset_wire(preset: Preset) -> dict[str, Any]:
    """One resource preset as the platform's API carries it."""
    out: dict[str, Any] = {
        "name": preset.name,
        "credits_per_hour": preset.credits_per_hour,
        "cpu": preset.cpu,
        "memory": preset.memory,
        "scheduler_enabled": preset.scheduler_enabled,
        "preemptible_node": preset.preemptible,
        "resource_pool_names": list(preset.pools),
        "available_resource_pool_names": list(preset.pools),
    }
    for vendor in ("nvidia", "amd", "intel"):
        gpu = _gpu(getattr(preset, f"{vendor}_gpu"))
        if gpu is not None:
            out[f"{vendor}_gpu"] = gpu
    if preset.nvidia_migs:
        out["nvidia_migs"] = {
            profile: {"count": mig.count, **({"model": mig.model} if mig.model else {})}
            for profile, mig in sorted(preset.nvidia_migs.items())
        }
    return out


def pool_wire(pool: NodePool, size: int) -> dict[str, Any]:
    """One resource pool as the platform's API carries it (`size` nodes, a fixed pool)."""
    out: dict[str, Any] = {
        "name": pool.name,
        "min_size": size,
        "max_size": size,
        "cpu": pool.cpu,
        "available_cpu": pool.cpu,
        "memory": pool.memory,
        "available_memory": pool.memory,
        "is_preemptible": pool.preemptible,
    }
    if pool.disk is not None:
        out["disk_size"] = pool.disk
    if pool.gpu is not None:
        gpu: dict[str, Any] = {"count": pool.gpu.count, "model": pool.gpu.model}
        if pool.gpu.memory is not None:
            gpu["memory"] = pool.gpu.memory
        out[f"{pool.gpu.vendor}_gpu"] = gpu
    return out


def oidc_issuer(inv: Inventory, cluster: Cluster) -> str:
    """The realm's issuer URL: the external Keycloak's, or the in-cluster one's host."""
    kc = cluster.keycloak
    base = (
        kc.url.rstrip("/") if kc.url else f"https://keycloak.{cluster_names(inv, cluster).domain}"
    )
    return f"{base}/realms/{kc.realm}"


def controller_env(cluster: Cluster) -> dict[str, str]:
    """The environment the platform's poller reads its label and toleration keys from."""
    return {
        "NP_CLUSTER_NAME": cluster.name,
        "NP_KUBE_NAMESPACE": cluster.platform.jobs_namespace,
        "NP_KUBE_NODE_LABEL_JOB": JOB_LABEL,
        "NP_KUBE_NODE_LABEL_PREEMPTIBLE": PREEMPTIBLE_LABEL,
        "NP_KUBE_NODE_LABEL_NODE_POOL": POOL_LABEL,
        "NP_KUBE_POD_JOB_TOLERATION_KEY": JOB_TAINT,
    }


def controller_config(
    inv: Inventory, cluster: Cluster, pool_sizes: dict[str, int]
) -> dict[str, Any]:
    """The config document both controllers read (mounted from the `platform-config` map)."""
    names = cluster_names(inv, cluster)
    return {
        "cluster": cluster.name,
        "domains": {"cluster": names.domain, "jobs": names.jobs, "apps": names.apps},
        "namespaces": {
            "platform": cluster.platform.namespace,
            "jobs": cluster.platform.jobs_namespace,
            "apps": cluster.platform.apps_namespace,
        },
        "node_labels": {
            "node_pool": POOL_LABEL,
            "node_pool_legacy": POOL_LABEL_LEGACY,
            "job": JOB_LABEL,
            "accelerator": ACCELERATOR_LABEL,
            "preemptible": PREEMPTIBLE_LABEL,
            "role": ROLE_LABEL,
        },
        "tolerations": {"job": JOB_TAINT, "preemptible": PREEMPTIBLE_TAINT, "gpu": GPU_TAINTS},
        "resource_pools": [pool_wire(p, pool_sizes.get(p.name, 0)) for p in cluster.node_pools],
        "resource_presets": [preset_wire(p) for p in cluster.presets],
        "oidc": {"issuer": oidc_issuer(inv, cluster), "client_id": cluster.keycloak.client_id},
        "image_pull_secret": "site-registry",
    }


def controller_images(inv: Inventory, release: ReleaseManifest) -> dict[str, str]:
    """Both controllers' images, from the release manifest, rewritten to the site registry."""
    by_name = {i.name: i for i in release.images_for("platform")}
    out: dict[str, str] = {}
    for controller, name in (
        ("job-controller", JOB_CONTROLLER_IMAGE),
        ("app-controller", APP_CONTROLLER_IMAGE),
    ):
        image = by_name.get(name)
        if image is None:
            raise BadInputError(
                f"the release manifest has no platform image {name}",
                remedy="use a release manifest of this installer version",
            )
        out[controller] = site_image(inv, image.reference)
    return out
