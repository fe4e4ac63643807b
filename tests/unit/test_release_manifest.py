"""The release manifest is sorted, unique, pinned like the project, and the lab seeds all of it."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from installer.release import ReleaseManifest, load_release

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"


def _load_seed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lab_upstream_seed", LAB / "upstream" / "seed.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


seed = _load_seed()


@pytest.fixture(scope="module")
def manifest() -> ReleaseManifest:
    return load_release()


def _versions_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (LAB / "versions.env").read_text(encoding="utf-8").splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    return {k: v.strip() for k, v in pairs}


def test_lists_are_sorted_and_unique(manifest: ReleaseManifest) -> None:
    images = [(i.name, i.tag) for i in manifest.images]
    assert images == sorted(images)
    assert len(set(images)) == len(images)
    for items in (manifest.charts, manifest.wheels, manifest.binaries):
        names = [i.name for i in items]
        assert names == sorted(names)
        assert len(set(names)) == len(names)


def test_image_names_carry_their_registry_host(manifest: ReleaseManifest) -> None:
    for image in manifest.images:
        host = image.name.split("/", 1)[0]
        assert "." in host, f"{image.name}: name the registry host (docker.io/library/...)"


def test_every_component_the_install_deploys_has_images(manifest: ReleaseManifest) -> None:
    used = {i.component for i in manifest.images}
    assert {"auxvm", "nodes", "storage", "keycloak", "platform"} <= used
    refs = {f"{i.name}:{i.tag}" for i in manifest.images}
    # The platform's on-prem guide: busybox:latest on every node, the VM's three services.
    assert "docker.io/library/busybox:latest" in refs
    assert any(r.startswith("docker.io/library/registry:2") for r in refs)
    assert any(r.startswith("ghcr.io/helm/chartmuseum:") for r in refs)
    assert any("devpi" in r for r in refs)


def _pinned(pyproject: str, dist: str) -> tuple[int, ...]:
    found = re.search(rf'"{re.escape(dist)}==([0-9.]+)"', pyproject)
    assert found, f"pyproject.toml pins no {dist}"
    return tuple(int(p) for p in found.group(1).split("."))


def test_binaries_match_the_project_pins(manifest: ReleaseManifest) -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    binaries = {b.name: b.version for b in manifest.binaries}
    versions = _versions_env()
    assert binaries["pulumi"] == versions["PULUMI_VERSION"]
    assert binaries["pulumi-language-python"] == versions["PULUMI_VERSION"]
    assert binaries["pulumi-resource-kubernetes"] == versions["PULUMI_KUBERNETES_VERSION"]
    assert f'"pulumi-kubernetes=={binaries["pulumi-resource-kubernetes"]}"' in pyproject
    # The CLI may run ahead of the Python SDK within one major version, never behind it.
    cli = tuple(int(p) for p in binaries["pulumi"].split("."))
    sdk = _pinned(pyproject, "pulumi")
    assert cli[0] == sdk[0]
    assert cli >= sdk


def test_installer_wheel_matches_the_package(manifest: ReleaseManifest) -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    wheel = next(w for w in manifest.wheels if w.name == "onprem-installer")
    assert f'version = "{wheel.version}"' in pyproject


def test_lab_seeds_every_image(manifest: ReleaseManifest) -> None:
    plans = seed.image_plans(manifest)
    assert Counter(p.reference for p in plans) == Counter(
        f"{i.name}:{i.tag}" for i in manifest.images
    )
    # Transfer code must meet real sizes: one generated layer of 200 MB or more.
    assert max(p.runtime_mib for p in plans) * 1024 * 1024 >= 200 * 1000 * 1000
    # Images of one component share their generated layer, as images built on one base do.
    by_component = Counter(p.component for p in plans if p.runtime_mib)
    assert max(by_component.values()) >= 2


def test_mirror_reference_keeps_the_full_upstream_name(manifest: ReleaseManifest) -> None:
    image = next(i for i in manifest.images if i.name == "ghcr.io/neuro-inc/platformapi")
    assert (
        seed.mirror_reference("127.0.0.1:15000", image)
        == f"127.0.0.1:15000/ghcr.io/neuro-inc/platformapi:{image.tag}"
    )


def test_lab_has_a_stand_in_for_every_chart(manifest: ReleaseManifest) -> None:
    for chart in manifest.charts:
        source = seed.chart_source(chart)
        meta = yaml.safe_load((source / "Chart.yaml").read_text(encoding="utf-8"))
        assert meta["name"] == chart.name
        assert (source / "values.yaml").is_file()
        assert list((source / "templates").glob("*.yaml")), f"{chart.name} has no templates"


def _has_key(values: dict[str, object], dotted: str) -> bool:
    node: object = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# Keys of the real charts that an installer sets: images (to point at the site registry),
# engines and storage classes, Keycloak's database and admin bootstrap, the job controller's
# label and toleration keys.
INSTALLER_KEYS = {
    "cstor": [
        "cspcOperator.image.registry",
        "cspcOperator.poolManager.image.registry",
        "cspcOperator.cstorPool.image.registry",
        "cspcOperator.cstorPoolExporter.image.registry",
        "cspcOperator.tolerations",
        "cvcOperator.image.registry",
        "cvcOperator.target.image.registry",
        "cvcOperator.volumeMgmt.image.registry",
        "cvcOperator.volumeExporter.image.registry",
        "cvcOperator.tolerations",
        "csiController.resizer.image.registry",
        "csiController.snapshotter.image.registry",
        "csiController.snapshotController.image.registry",
        "csiController.attacher.image.registry",
        "csiController.provisioner.image.registry",
        "csiController.tolerations",
        "cstorCSIPlugin.image.registry",
        "csiNode.driverRegistrar.image.registry",
        "csiNode.tolerations",
        "admissionServer.image.registry",
        "admissionServer.tolerations",
        "openebsNDM.enabled",
        "openebs-ndm.ndm.image.registry",
        "openebs-ndm.ndm.tolerations",
        "openebs-ndm.ndmOperator.image.registry",
        "openebs-ndm.ndmOperator.tolerations",
        "analytics.enabled",
    ],
    "openebs": [
        "global.imageRegistry",
        "global.imagePullSecrets",
        "engines.local.lvm.enabled",
        "engines.local.zfs.enabled",
        "engines.replicated.mayastor.enabled",
        "localpv-provisioner.hostpathClass.enabled",
        "localpv-provisioner.hostpathClass.name",
        "localpv-provisioner.hostpathClass.isDefaultClass",
        "localpv-provisioner.hostpathClass.basePath",
        "localpv-provisioner.localpv.basePath",
        "localpv-provisioner.localpv.image.registry",
        "localpv-provisioner.helperPod.image.registry",
        "lvm-localpv.lvmPlugin.image.registry",
        "openebs-crds.csi.volumeSnapshots.enabled",
        "loki.enabled",
        "alloy.enabled",
    ],
    "keycloak": [
        "global.imageRegistry",
        "global.imagePullSecrets",
        "image.registry",
        "image.repository",
        "image.tag",
        "auth.adminUser",
        "auth.existingSecret",
        "auth.passwordSecretKey",
        "proxyHeaders",
        "production",
        "extraEnvVars",
        "ingress.enabled",
        "ingress.ingressClassName",
        "ingress.hostname",
        "ingress.tls",
        "postgresql.enabled",
        "postgresql.image.registry",
        "postgresql.auth.existingSecret",
        "externalDatabase.host",
        "externalDatabase.existingSecret",
        "tolerations",
        "nodeSelector",
    ],
    "platform-api-poller": [
        "image.repository",
        "image.tag",
        "imagePullSecrets",
        "platform.clusterName",
        "platform.registryUrl",
        "jobs.namespace",
        "jobs.tolerationKey",
        "jobs.preemptibleTolerationKey",
        "jobs.imagePullSecret",
        "nodeLabels.job",
        "nodeLabels.preemptible",
        "nodeLabels.nodePool",
        "priorityClassName",
    ],
    "platform-apps": [
        "image.repository",
        "image.tag",
        "imagePullSecrets",
        "apps.namespace",
        "apps.chartRepository.url",
        "nodeLabels.nodePool",
    ],
}


def test_stand_in_charts_take_the_installer_keys(manifest: ReleaseManifest) -> None:
    assert set(INSTALLER_KEYS) == {c.name for c in manifest.charts}
    for chart in manifest.charts:
        values = yaml.safe_load((seed.chart_source(chart) / "values.yaml").read_text("utf-8"))
        missing = [k for k in INSTALLER_KEYS[chart.name] if not _has_key(values, k)]
        assert not missing, f"{chart.name} values.yaml lacks {missing}"


def test_chart_image_defaults_name_manifest_images(manifest: ReleaseManifest) -> None:
    refs = {i.name for i in manifest.images}
    for chart in manifest.charts:
        values = yaml.safe_load((seed.chart_source(chart) / "values.yaml").read_text("utf-8"))
        image = values.get("image", {})
        repo = image.get("repository")
        if repo:
            # Bitnami charts split the registry host out of the repository.
            full = f"{image['registry']}/{repo}" if "registry" in image else repo
            assert full in refs, f"{chart.name} defaults to {full}, not in the manifest"
