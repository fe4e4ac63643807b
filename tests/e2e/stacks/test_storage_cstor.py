"""The storage stack with engine cstor on the lab: the cstor chart from the site chart repository,
the CStorPoolCluster on the inventory's disks as NDM names them, the default class.

The lab has no disks and nothing runs in kwok's pods, so NDM's daemon cannot discover anything:
`NdmStandIn` does what it would do on nodes with those disks, once the chart has put NDM's
BlockDevice CRD in place, it reports each disk as a BlockDevice object (README, stand-ins).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from installer.inventory import load_inventory
from installer.site import hub_urls
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir
from tests.e2e.bootstrap.cli import installer, site_lock, tool_env
from tests.e2e.stacks.chartrepo import site_chart_repo
from tests.e2e.stacks.conftest import Site

pytestmark = [pytest.mark.e2e, pytest.mark.lab_site]

NS = "openebs"
BD_CRD = "blockdevices.openebs.io"
# What the chart's crds/ folders install; helm keeps them on uninstall, the test removes them.
CHART_CRDS = (
    BD_CRD,
    "blockdeviceclaims.openebs.io",
    "cstorpoolclusters.cstor.openebs.io",
    "cstorpoolinstances.cstor.openebs.io",
    "cstorvolumeconfigs.cstor.openebs.io",
)
DISKS = [("cpu-1", "/dev/sdb"), ("cpu-2", "/dev/sdb"), ("cpu-3", "/dev/sdb")]
CHART_DEPLOYMENTS = (
    "cstor-cspc-operator",
    "cstor-cvc-operator",
    "cstor-admission-server",
    "cstor-openebs-cstor-csi-controller",
    "cstor-openebs-ndm-operator",
)


def _storage(disks: list[tuple[str, str]], replicas: int) -> str:
    lines = "".join(f"        - {{node: {n}, device: {d}}}\n" for n, d in disks)
    return f"    storage:\n      engine: cstor\n      replicas: {replicas}\n      disks:\n{lines}"


def bd_name(node: str, device: str) -> str:
    """NDM's naming: `blockdevice-` and a hash of what identifies the disk."""
    return "blockdevice-" + hashlib.sha256(f"{node}{device}".encode()).hexdigest()[:32]


class NdmStandIn:
    """NDM's daemon on nodes with raw disks: once its CRD exists, it reports them."""

    def __init__(self, api: client.ApiClient, disks: list[tuple[str, str]]) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.ext = client.ApiextensionsV1Api(api)
        self.disks = disks
        self.reported: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NdmStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _crd_ready(self) -> bool:
        try:
            crd = self.ext.read_custom_resource_definition(BD_CRD)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._crd_ready():
                time.sleep(0.5)
            for node, device in self.disks:
                if self._stop.is_set():
                    return
                self.custom.create_namespaced_custom_object(
                    "openebs.io", "v1alpha1", NS, "blockdevices", self._object(node, device)
                )
                self.reported.append(bd_name(node, device))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.errors.append(exc)

    @staticmethod
    def _object(node: str, device: str) -> dict[str, Any]:
        return {
            "apiVersion": "openebs.io/v1alpha1",
            "kind": "BlockDevice",
            "metadata": {
                "name": bd_name(node, device),
                "labels": {
                    "kubernetes.io/hostname": node,
                    "ndm.io/managed": "true",
                    "ndm.io/blockdevice-type": "blockdevice",
                },
            },
            "spec": {
                "path": device,
                "nodeAttributes": {"nodeName": node},
                "capacity": {"storage": 107374182400},
                "details": {"deviceType": "disk"},
                "devlinks": [],
                "filesystem": {},
            },
            "status": {"claimState": "Unclaimed", "state": "Active"},
        }


def _remove_chart_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for name in CHART_CRDS:
        try:
            ext.delete_custom_resource_definition(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="module")
def lab_site(core: client.CoreV1Api) -> Iterator[None]:
    """The lab site alone for the module; the CRDs helm leaves behind removed at the end."""
    with site_lock():
        try:
            yield
        finally:
            _remove_chart_crds(core.api_client)


def _run(site: Site, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {
        **tool_env(site.lab),
        "SSL_CERT_FILE": site.lab.env["LAB_KEYCLOAK_CA"],
        # NDM reports a node's disks within seconds of starting; the lab need not wait long.
        "INSTALLER_NDM_DISCOVERY_S": "20",
    }
    return installer(
        *args,
        "--inventory",
        str(site.inventory),
        log_dir=site.folder / "runs",
        timeout=900,
        env=env,
    )


def _wait_available(apps: client.AppsV1Api, name: str) -> client.V1Deployment:
    deadline = time.monotonic() + 120
    while True:
        dep = apps.read_namespaced_deployment(name, NS)
        if (dep.status.available_replicas or 0) >= 1:
            return dep
        assert time.monotonic() < deadline, f"{name} never became available"
        time.sleep(1)


def test_cstor_pools_on_ndm_block_devices(
    site: Site, core: client.CoreV1Api, lab_site: None
) -> None:
    api = core.api_client
    apps, storage = client.AppsV1Api(api), client.StorageV1Api(api)
    custom = client.CustomObjectsApi(api)
    password = StateDir(site.state).secret(HUB_PULL_PASSWORD_SECRET).get_secret_value()
    charts = site.lab.state / "upstream" / "charts"
    original = site.inventory.read_text(encoding="utf-8")
    localpv = "    storage: {engine: localpv-hostpath}\n"
    assert localpv in original
    with site_chart_repo(charts, site.state, HUB_PULL_USER, password) as port:
        base = original.replace(
            "  ssh: {",
            f"  hostname: 127.0.0.1\n  services: {{chartmuseum: {{port: {port},"
            " data_path: /srv/charts}}\n  ssh: {",
            1,
        )
        # One disk NDM does not report (cpu-3 has /dev/sdb, not /dev/sdz).
        wrong = [*DISKS[:2], ("cpu-3", "/dev/sdz")]
        site.inventory.write_text(base.replace(localpv, _storage(wrong, 3)), encoding="utf-8")
        try:
            # A plan on a cluster without cStor: the pool cluster's CRD and the block devices
            # do not exist yet, and the preview still lists what `up` will make.
            code, data, tail = _run(site, "stacks", "preview", "-c", "storage")
            assert code == 0, tail
            planned = {(s["type"], s["name"]) for s in data["stacks"][0]["steps"]}
            assert {
                ("kubernetes:helm.sh/v3:Release", "cstor"),
                ("kubernetes:cstor.openebs.io/v1:CStorPoolCluster", "cspc-openebs-platform"),
                ("kubernetes:storage.k8s.io/v1:StorageClass", "class-openebs-platform"),
            } <= planned
            with NdmStandIn(api, DISKS) as ndm:
                code, data, tail = _run(site, "stacks", "up", "-c", "storage")
                assert code == 1, tail
                message = str(data.get("error", {}).get("message", "")) or tail
                assert "node cpu-3, device /dev/sdz: NDM reports no such block device" in message
                assert "nothing is reported as done" in message
                assert not ndm.errors, ndm.errors
                assert len(ndm.reported) == 3
            pools = custom.list_namespaced_custom_object(
                "cstor.openebs.io", "v1", NS, "cstorpoolclusters"
            )["items"]
            assert pools == []  # no pool cluster on a partial disk set
            assert "openebs-platform" not in {
                c.metadata.name for c in storage.list_storage_class().items
            }

            # The operator fixes the device; the re-run continues where the first stopped.
            site.inventory.write_text(base.replace(localpv, _storage(DISKS, 3)), encoding="utf-8")
            code, data, tail = _run(site, "stacks", "up", "-c", "storage")
            assert code == 0, tail
            assert data["stacks"][0]["changes"] > 0

            hub = hub_urls(load_inventory(site.inventory)).registry
            for name in CHART_DEPLOYMENTS:
                _wait_available(apps, name)
            cspc_image = apps.read_namespaced_deployment("cstor-cspc-operator", NS)
            assert cspc_image.spec.template.spec.containers[0].image == (
                f"{hub}/docker.io/openebs/cspc-operator:3.6.0"
            )
            ndm_ds = apps.read_namespaced_daemon_set("cstor-openebs-ndm", NS)
            assert "nvidia.com/gpu" in {t.key for t in ndm_ds.spec.template.spec.tolerations}

            cspc = custom.get_namespaced_custom_object(
                "cstor.openebs.io", "v1", NS, "cstorpoolclusters", "openebs-platform"
            )
            got = [
                (
                    p["nodeSelector"]["kubernetes.io/hostname"],
                    [b["blockDeviceName"] for g in p["dataRaidGroups"] for b in g["blockDevices"]],
                )
                for p in cspc["spec"]["pools"]
            ]
            assert got == [(n, [bd_name(n, d)]) for n, d in DISKS]
            cls = storage.read_storage_class("openebs-platform")
            assert cls.provisioner == "cstor.csi.openebs.io"
            assert cls.parameters == {
                "cas-type": "cstor",
                "cstorPoolCluster": "openebs-platform",
                "replicaCount": "3",
            }
            assert cls.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == (
                "true"
            )

            code, data, tail = _run(site, "stacks", "preview", "-c", "storage")
            assert code == 0, tail
            assert data["stacks"][0]["changes"] == 0
        finally:
            code, _data, tail = _run(site, "stacks", "destroy", "-c", "storage", "--yes")
            site.inventory.write_text(original, encoding="utf-8")
            assert code == 0, tail
    assert "openebs-platform" not in {c.metadata.name for c in storage.list_storage_class().items}
    assert NS not in {n.metadata.name for n in core.list_namespace().items}
    assert not [
        d.metadata.name
        for d in apps.list_deployment_for_all_namespaces().items
        if d.metadata.name.startswith("cstor-")
    ]
