"""The derived view: the platform's label and taint keys, tolerations, resources, names."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from installer.airgap.load import site_target
from installer.inventory import load_inventory
from installer.inventory.types import format_bytes, parse_quantity
from installer.site import (
    cluster_names,
    hub_urls,
    mirrored_registries,
    normalize_image,
    pool_labels,
    pool_taints,
    preset_resources,
    preset_tolerations,
    site_image,
)
from installer.state import HUB_USER

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def inv():  # type: ignore[no-untyped-def]
    return load_inventory(REPO / "inventories" / "onprem.example.yml")


def _pool(inv, name):  # type: ignore[no-untyped-def]
    return next(p for p in inv.clusters[0].node_pools if p.name == name)


def _preset(inv, name):  # type: ignore[no-untyped-def]
    return next(p for p in inv.clusters[0].presets if p.name == name)


def test_cpu_pool_labels_and_taints(inv) -> None:  # type: ignore[no-untyped-def]
    pool = _pool(inv, "cpu")
    assert pool_labels(pool) == {
        "platform.apolo.us/node-pool": "cpu",
        "platform.neuromation.io/nodepool": "cpu",
        "platform.neuromation.io/job": "true",
        "platform.apolo.us/role": "workload",
    }
    assert [(t.key, t.effect) for t in pool_taints(pool)] == [
        ("platform.neuromation.io/job", "NoSchedule")
    ]


def test_preemptible_gpu_pool(inv) -> None:  # type: ignore[no-untyped-def]
    pool = _pool(inv, "h100-spot")
    labels = pool_labels(pool)
    assert labels["platform.neuromation.io/accelerator"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["platform.neuromation.io/preemptible"] == "true"
    assert [t.key for t in pool_taints(pool)] == [
        "nvidia.com/gpu",
        "platform.neuromation.io/job",
        "platform.neuromation.io/preemptible",
    ]


def test_tolerations_follow_the_job_controller_contract(inv) -> None:  # type: ignore[no-untyped-def]
    cluster = inv.clusters[0]
    assert [t.key for t in preset_tolerations(_preset(inv, "cpu-small"), cluster)] == [
        "platform.neuromation.io/job"
    ]
    assert [t.key for t in preset_tolerations(_preset(inv, "gpu-a100x1"), cluster)] == [
        "nvidia.com/gpu",
        "platform.neuromation.io/job",
    ]
    assert [t.key for t in preset_tolerations(_preset(inv, "gpu-h100x1-spot"), cluster)] == [
        "nvidia.com/gpu",
        "platform.neuromation.io/job",
        "platform.neuromation.io/preemptible",
    ]


def test_resources_requests_equal_limits_form(inv) -> None:  # type: ignore[no-untyped-def]
    assert preset_resources(_preset(inv, "gpu-a100x8")) == {
        "cpu": "120000m",
        "memory": "960Gi",
        "nvidia.com/gpu": "8",
    }


def test_dns_names_and_hub(inv) -> None:  # type: ignore[no-untyped-def]
    names = cluster_names(inv, inv.clusters[0])
    assert names.records == [
        "prod.org.ml.acme.internal",
        "*.prod.org.ml.acme.internal",
        "*.jobs.prod.org.ml.acme.internal",
        "*.apps.prod.org.ml.acme.internal",
    ]
    urls = hub_urls(inv)
    assert urls.registry == "hub.ml.acme.internal:5000"
    assert urls.charts == "https://hub.ml.acme.internal:8080"
    # The installer's read-write endpoints follow the ports (the example sets none of its own).
    assert urls.registry_push == "hub.ml.acme.internal:5001"
    assert urls.charts_push == "https://hub.ml.acme.internal:8081"


def test_airgap_load_targets_the_push_endpoints_with_the_installers_login(  # type: ignore[no-untyped-def]
    inv, tmp_path: Path
) -> None:
    """Pushes go where the installer's login may write; the clusters' port refuses them."""
    site = inv.model_copy(update={"site": inv.site.model_copy(update={"state_dir": str(tmp_path)})})
    target, _ = site_target(site)
    assert target.registry.host == hub_urls(site).registry_push
    assert target.registry.username == HUB_USER
    assert target.charts is not None and target.charts.url == hub_urls(site).charts_push


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("busybox:latest", "docker.io/library/busybox:latest"),
        ("chartmuseum/chartmuseum:v0.16.2", "docker.io/chartmuseum/chartmuseum:v0.16.2"),
        ("ghcr.io/neuro-inc/platformapi:1", "ghcr.io/neuro-inc/platformapi:1"),
        ("localhost/x:1", "localhost/x:1"),
        ("registry.local:5000/a/b:1", "registry.local:5000/a/b:1"),
    ],
)
def test_image_normalisation(ref: str, full: str) -> None:
    assert normalize_image(ref) == full


def test_site_image_keeps_the_full_path(inv) -> None:  # type: ignore[no-untyped-def]
    assert (
        site_image(inv, "busybox:latest")
        == "hub.ml.acme.internal:5000/docker.io/library/busybox:latest"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("64Gi", Decimal(64 * 2**30)),
        ("1.5", Decimal("1.5")),
        ("2k", Decimal(2000)),
        (4, Decimal(4)),
        ("1Ki", Decimal(1024)),
    ],
)
def test_quantities(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["64GB", "-1", "abc", "1.2.3", "", "Gi", True, None, [1]])
def test_bad_quantities(text: object) -> None:
    with pytest.raises(ValueError, match=r"quantity|negative|boolean"):
        parse_quantity(text)


def test_format_bytes() -> None:
    assert format_bytes(64 * 2**30) == "64Gi"
    assert format_bytes(1500) == "1500"


def test_nodes_mirror_the_usual_registries_and_every_one_the_release_names() -> None:
    mirrored = mirrored_registries(
        ["busybox", "ghcr.io/org/app", "registry.example.com:5000/team/tool", "quay.io/x/y"]
    )
    assert [(m.name, m.server) for m in mirrored] == [
        ("docker.io", "https://registry-1.docker.io"),
        ("ghcr.io", "https://ghcr.io"),
        ("quay.io", "https://quay.io"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("registry.k8s.io", "https://registry.k8s.io"),
    ]
